package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// testContract runs what every Artifacts must do against a fresh store
// from open (each call a store of its own).
func testContract(t *testing.T, open func(t *testing.T) Artifacts) {
	ctx := context.Background()
	src := t.TempDir()
	write := func(name string, data []byte) registry.Artifact {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		return registry.Artifact{File: name, Kind: "source"}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), (partSize+partSize/2)/16) // two parts on S3
	tarball := write("pkg_1.0.tar.gz", []byte("tarball"))
	bigFile := write("big.tar.gz", big)

	t.Run("PutStoresTheBytesAndOpenReadsThemWithRanges", func(t *testing.T) {
		s := open(t)
		arts, err := s.Put(ctx, "src", "pkg", 7, 3, src, []registry.Artifact{tarball, bigFile})
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(big)
		if len(arts) != 2 || arts[0].Size != 7 || arts[0].SHA256 != "db4b4d0d1cb480bf9aeea253771c00febe627f236765fa37d6a5614f079a3aa0" || arts[0].Kind != "source" ||
			arts[1].Size != int64(len(big)) || arts[1].SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("artifacts = %+v", arts)
		}
		f, err := s.Open(ctx, "src", "pkg", 7, 3, "big.tar.gz")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if f.Size() != int64(len(big)) || f.ModTime().IsZero() {
			t.Fatalf("size %d, modified %v", f.Size(), f.ModTime())
		}
		got, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read %d bytes of %d: %v", len(got), len(big), err)
		}
		// A seek then a read, past the first part, and a ReadAt.
		off := int64(partSize + 5)
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 10)
		if _, err := io.ReadFull(f, p); err != nil || !bytes.Equal(p, big[off:off+10]) {
			t.Fatalf("read at %d: %q, %v", off, p, err)
		}
		if n, err := f.ReadAt(p, 3); n != 10 || err != nil || !bytes.Equal(p, big[3:13]) {
			t.Fatalf("ReadAt 3: %d %q %v", n, p, err)
		}
		for _, bad := range []string{"../x", ".incoming-1", "", "a/b"} {
			if _, err := s.Open(ctx, "src", "pkg", 7, 3, bad); err == nil {
				t.Errorf("Open(%q) succeeded", bad)
			}
		}
		if _, err := s.Open(ctx, "src", "pkg", 7, 99, "pkg_1.0.tar.gz"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("another attempt's file: %v, want fs.ErrNotExist", err)
		}
	})

	t.Run("ServeAnswersHEADAndRange", func(t *testing.T) {
		s := open(t)
		if _, err := s.Put(ctx, "src", "pkg", 7, 3, src, []registry.Artifact{bigFile}); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-gzip")
			if err := Serve(w, r, s, false, "src", "pkg", 7, 3, strings.TrimPrefix(r.URL.Path, "/")); err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
			}
		}))
		defer srv.Close()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/big.tar.gz", nil)
		req.Header.Set("Range", "bytes=100-199")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, big[100:200]) {
			t.Fatalf("range: %s, %d bytes", resp.Status, len(body))
		}
		resp, err = http.Head(srv.URL + "/big.tar.gz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(big)) {
			t.Fatalf("HEAD: %s, length %d", resp.Status, resp.ContentLength)
		}
		resp, err = http.Get(srv.URL + "/missing.tar.gz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("missing file: %s", resp.Status)
		}
	})

	t.Run("NeverOverwritesAndDiscardRemovesOnlyThatAttempt", func(t *testing.T) {
		s := open(t)
		if _, err := s.Put(ctx, "src", "pkg", 7, 3, src, []registry.Artifact{tarball}); err != nil {
			t.Fatal(err)
		}
		other := t.TempDir()
		os.WriteFile(filepath.Join(other, "pkg_1.0.tar.gz"), []byte("another"), 0o600)
		_, err := s.Put(ctx, "src", "pkg", 7, 3, other, []registry.Artifact{tarball})
		if err == nil || !strings.Contains(err.Error(), "7-3-pkg_1.0.tar.gz") {
			t.Fatalf("a second Put of one attempt's file: %v, want an error naming it", err)
		}
		if got := readAll(t, s, 7, 3, "pkg_1.0.tar.gz"); got != "tarball" {
			t.Fatalf("the first Put's file now reads %q", got)
		}
		if _, err := s.Put(ctx, "src", "pkg", 7, 4, src, []registry.Artifact{tarball}); err != nil {
			t.Fatal(err)
		}
		if err := s.Discard(ctx, "src", "pkg", 7, 4, []registry.Artifact{tarball}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Open(ctx, "src", "pkg", 7, 4, "pkg_1.0.tar.gz"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a discarded attempt's file: %v", err)
		}
		if got := readAll(t, s, 7, 3, "pkg_1.0.tar.gz"); got != "tarball" {
			t.Errorf("discarding attempt 4 touched attempt 3's file: %q", got)
		}
	})

	t.Run("PutBytesStoresMemoryAsPutStoresAFileAndNeverOverwrites", func(t *testing.T) {
		s := open(t)
		data := []byte("a compressed log")
		a, err := s.PutBytes(ctx, "src", "pkg", 9, 2, registry.Artifact{File: "build.log.gz", Kind: "log"}, data)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if a.File != "build.log.gz" || a.Kind != "log" || a.Size != int64(len(data)) || a.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("artifact = %+v", a)
		}
		if got := readAll(t, s, 9, 2, "build.log.gz"); got != string(data) {
			t.Fatalf("read %q", got)
		}
		if _, err := s.PutBytes(ctx, "src", "pkg", 9, 2, registry.Artifact{File: "build.log.gz"}, []byte("other")); err == nil {
			t.Fatal("a second PutBytes of one attempt's file succeeded")
		}
		if got := readAll(t, s, 9, 2, "build.log.gz"); got != string(data) {
			t.Fatalf("the first PutBytes's file now reads %q", got)
		}
		if _, err := s.PutBytes(ctx, "src", "pkg", 9, 2, registry.Artifact{File: "../x"}, data); err == nil {
			t.Error("PutBytes of a path succeeded")
		}
	})

	t.Run("AFailedPutLeavesNothing", func(t *testing.T) {
		s := open(t)
		_, err := s.Put(ctx, "src", "pkg", 8, 1, src, []registry.Artifact{tarball, bigFile, {File: "absent.tar.gz"}})
		if err == nil {
			t.Fatal("a Put of a missing file succeeded")
		}
		if left := walk(t, s); len(left) != 0 {
			t.Fatalf("a failed Put left %v", left)
		}
		if _, err := s.Put(ctx, "..", "pkg", 1, 1, src, nil); err == nil {
			t.Error("a source of .. was accepted")
		}
		for _, bad := range []string{"../pkg_1.0.tar.gz", ".hidden", "", "a/b"} {
			if _, err := s.Put(ctx, "src", "pkg", 8, 1, src, []registry.Artifact{{File: bad, Kind: "source"}}); err == nil {
				t.Errorf("Put of artifact %q succeeded", bad)
			}
		}
	})

	t.Run("WalkListsAttemptsAndRemoveDeletesOne", func(t *testing.T) {
		s := open(t)
		if err := s.Check(ctx); err != nil {
			t.Fatal(err)
		}
		if n, err := HighestBuildID(ctx, s); err != nil || n != 0 {
			t.Fatalf("an empty store's highest build id: %d (%v)", n, err)
		}
		for _, at := range [][2]int64{{2, 5}, {1, 1}} {
			if _, err := s.Put(ctx, "src", "pkg", at[0], at[1], src, []registry.Artifact{tarball}); err != nil {
				t.Fatal(err)
			}
		}
		got := walk(t, s)
		if strings.Join(got, " ") != "src/pkg/1-1-pkg_1.0.tar.gz src/pkg/2-5-pkg_1.0.tar.gz" {
			t.Fatalf("walk = %v (the check's probe must not stay)", got)
		}
		if n, err := HighestBuildID(ctx, s); err != nil || n != 2 {
			t.Fatalf("highest build id %d (%v), want 2", n, err)
		}
		if err := s.Remove(ctx, Stored{Source: "src", Package: "pkg", Build: 1, Token: 1, File: "pkg_1.0.tar.gz"}); err != nil {
			t.Fatal(err)
		}
		if got := walk(t, s); strings.Join(got, " ") != "src/pkg/2-5-pkg_1.0.tar.gz" {
			t.Fatalf("after Remove, walk = %v", got)
		}
	})
}

func readAll(t *testing.T, s Artifacts, build, token int64, file string) string {
	t.Helper()
	f, err := s.Open(context.Background(), "src", "pkg", build, token, file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// walk lists the store's attempt files by name, sorted.
func walk(t *testing.T, s Artifacts) []string {
	t.Helper()
	var names []string
	if err := s.Walk(context.Background(), func(f Stored) error {
		if f.ModTime.IsZero() || f.Size <= 0 {
			t.Errorf("%s: size %d, modified %v", f.Name(), f.Size, f.ModTime)
		}
		names = append(names, f.Name())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}
