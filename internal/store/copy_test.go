package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestCopyMovesADirectoryIntoABucketVerifiedAndResumable: every file a
// record names, in today's layout and an earlier one, reaches the bucket
// with its recorded sha256; a second run copies nothing, a run after a
// loss copies only what is missing, and a file that does not match its
// record stops the copy, named.
func TestCopyMovesADirectoryIntoABucketVerifiedAndResumable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir, _ := NewDir(t.TempDir())
	b := testenv.S3(t)
	bucket := bucketOn(t, b, "")
	src := t.TempDir()
	for _, f := range []string{"a_1.tar.gz", "a-1.whl"} {
		os.WriteFile(filepath.Join(src, f), []byte("bytes of "+f), 0o600)
	}
	arts, err := dir.Put(ctx, "src", "pkg", 1, 2, src, []registry.Artifact{{File: "a_1.tar.gz", Kind: "source"}, {File: "a-1.whl", Kind: "wheel"}})
	if err != nil {
		t.Fatal(err)
	}
	// A build recorded before attempt tokens: <build id>/<file>.
	old := []byte("an old tarball")
	os.MkdirAll(filepath.Join(dir.Root, "src", "pkg", "3"), 0o755)
	os.WriteFile(filepath.Join(dir.Root, "src", "pkg", "3", "a_0.9.tar.gz"), old, 0o644)
	sum := sha256.Sum256(old)
	// A failed build's log, moved out of Redis (internal/buildlog) under
	// its builder's name.
	os.WriteFile(filepath.Join(src, registry.LogFile), []byte("a compressed log"), 0o600)
	logs, err := dir.Put(ctx, "src", "bld", 5, 3, src, []registry.Artifact{{File: registry.LogFile, Kind: "log"}})
	if err != nil {
		t.Fatal(err)
	}
	builds := []*registry.Build{
		{ID: 1, Source: "src", Package: "pkg", AttemptToken: 2, Artifacts: arts},
		{ID: 3, Source: "src", Package: "pkg", Artifacts: []registry.Artifact{{File: "a_0.9.tar.gz", Size: int64(len(old)), SHA256: hex.EncodeToString(sum[:])}}},
		{ID: 5, Source: "src", Builder: "bld", AttemptToken: 3, Status: registry.StatusFailed,
			Log: &registry.StoredLog{Package: "bld", Token: 3, File: registry.LogFile, Stored: logs[0].Size, SHA256: logs[0].SHA256}},
	}
	n, err := Copy(ctx, dir, bucket, builds, t.TempDir(), nil)
	if err != nil || n.Copied != 4 || n.Present != 0 {
		t.Fatalf("first copy: %+v, %v", n, err)
	}
	if lf, err := bucket.Open(ctx, "src", "bld", 5, 3, registry.LogFile); err != nil || lf.Size() != logs[0].Size {
		t.Fatalf("the log did not reach the bucket: %v", err)
	} else {
		lf.Close()
	}
	if got := readAll(t, bucket, 1, 2, "a-1.whl"); got != "bytes of a-1.whl" {
		t.Fatalf("the bucket's wheel reads %q", got)
	}
	f, err := bucket.Open(ctx, "src", "pkg", 3, 0, "a_0.9.tar.gz")
	if err != nil {
		t.Fatalf("the earlier layout's file: %v", err)
	}
	f.Close()
	if n, err := Copy(ctx, dir, bucket, builds, t.TempDir(), nil); err != nil || n.Copied != 0 || n.Present != 4 {
		t.Fatalf("second copy: %+v, %v", n, err)
	}
	if _, err := b.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.Bucket), Key: aws.String("src/pkg/1-2-a_1.tar.gz")}); err != nil {
		t.Fatal(err)
	}
	if n, err := Copy(ctx, dir, bucket, builds, t.TempDir(), nil); err != nil || n.Copied != 1 || n.Present != 3 {
		t.Fatalf("copy after a loss: %+v, %v", n, err)
	}

	// A file whose bytes are not its record's is not copied.
	os.WriteFile(filepath.Join(src, "b_1.tar.gz"), []byte("good"), 0o600)
	barts, err := dir.Put(ctx, "src", "b", 4, 1, src, []registry.Artifact{{File: "b_1.tar.gz", Kind: "source"}})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir.Root, "src", "b", "4-1-b_1.tar.gz"), 0o644)
	os.WriteFile(filepath.Join(dir.Root, "src", "b", "4-1-b_1.tar.gz"), []byte("evil"), 0o644)
	_, err = Copy(ctx, dir, bucket, append(builds, &registry.Build{ID: 4, Source: "src", Package: "b", AttemptToken: 1, Artifacts: barts}), t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "b_1.tar.gz") || !strings.Contains(err.Error(), "not the recorded") {
		t.Fatalf("a corrupt file: %v", err)
	}
	if _, err := bucket.Open(ctx, "src", "b", 4, 1, "b_1.tar.gz"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the corrupt file reached the bucket: %v", err)
	}
}
