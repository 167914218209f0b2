package store

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// bucketOn is a Bucket on the test server's bucket b, with b's
// credentials given in-process (the default chain reads the environment,
// which parallel tests cannot each set).
func bucketOn(t *testing.T, b testenv.S3Bucket, prefix string) *Bucket {
	t.Helper()
	s, err := newBucket(context.Background(), config.S3Storage{Bucket: b.Bucket, Region: b.Region, Endpoint: b.Endpoint, EnablePathStyle: true, Prefix: prefix},
		awsconfig.WithCredentialsProvider(b.CredentialsProvider()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBucketKeepsTheContract(t *testing.T) {
	t.Parallel()
	testContract(t, func(t *testing.T) Artifacts { return bucketOn(t, testenv.S3(t), "pkgfleet/") })
}

// TestBucketCheckRefusesInOneLine: wrong credentials or a missing bucket
// fail the startup check in one line that names the bucket and the
// endpoint, and never the secret key.
func TestBucketCheckRefusesInOneLine(t *testing.T) {
	t.Parallel()
	b := testenv.S3(t)
	if err := bucketOn(t, b, "").Check(context.Background()); err != nil {
		t.Fatalf("a good bucket: %v", err)
	}
	wrong := b
	wrong.SecretKey = "not-" + b.SecretKey
	missing := b
	missing.Bucket = "no-such-bucket"
	for name, c := range map[string]testenv.S3Bucket{"wrong credentials": wrong, "missing bucket": missing} {
		err := bucketOn(t, c, "").Check(context.Background())
		if err == nil {
			t.Fatalf("%s: the check passed", name)
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.Contains(msg, c.Bucket) || !strings.Contains(msg, c.Endpoint) || strings.Contains(msg, b.SecretKey) {
			t.Errorf("%s: %q, want one line naming bucket and endpoint, without the secret", name, msg)
		}
	}
}

// TestBucketObjectDeletedBehindOurBack: Open says fs.ErrNotExist, so the
// index and the API answer 404 for that file.
func TestBucketObjectDeletedBehindOurBack(t *testing.T) {
	t.Parallel()
	b := testenv.S3(t)
	s := bucketOn(t, b, "")
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a.tar.gz"), []byte("a"), 0o600)
	ctx := context.Background()
	if _, err := s.Put(ctx, "src", "pkg", 1, 1, src, []registry.Artifact{{File: "a.tar.gz"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.Bucket), Key: aws.String("src/pkg/1-1-a.tar.gz")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(ctx, "src", "pkg", 1, 1, "a.tar.gz"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of a deleted object: %v, want fs.ErrNotExist", err)
	}
}

// TestBucketRedirectsToAPresignedURL: with S3Redirect, Serve answers with
// a redirect that a client without credentials can follow.
func TestBucketRedirectsToAPresignedURL(t *testing.T) {
	t.Parallel()
	b := testenv.S3(t)
	s := bucketOn(t, b, "p/")
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a.tar.gz"), []byte("the bytes"), 0o600)
	if _, err := s.Put(context.Background(), "src", "pkg", 1, 1, src, []registry.Artifact{{File: "a.tar.gz"}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := Serve(w, r, s, true, "src", "pkg", 1, 1, "a.tar.gz"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	var redirected bool
	c := &http.Client{CheckRedirect: func(req *http.Request, via []*http.Request) error {
		redirected = strings.HasPrefix(req.URL.String(), b.Endpoint)
		return nil
	}}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !redirected || resp.StatusCode != http.StatusOK || string(body) != "the bytes" {
		t.Fatalf("redirected %v, %s, %q", redirected, resp.Status, body)
	}
	// A HEAD is answered without a redirect: the URL is presigned for GET.
	redirected = false
	resp, err = c.Head(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if redirected || resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len("the bytes")) {
		t.Fatalf("HEAD: redirected %v, %s, length %d", redirected, resp.Status, resp.ContentLength)
	}
}

// TestBucketKilledDuringAnUpload: the server dies in the middle of a
// multipart upload; Put fails, and once the server is back the half-sent
// file is no object (a complete file before it may stay: no record names
// it, and the sweep removes it with the stale upload).
func TestBucketKilledDuringAnUpload(t *testing.T) {
	t.Parallel()
	srv := testenv.NewS3Server(t)
	b := srv.Bucket(t)
	slow, relay := b.Slow(t, 0)
	s := bucketOn(t, slow, "")
	src := t.TempDir()
	big := make([]byte, 3*partSize)
	os.WriteFile(filepath.Join(src, "big.tar.gz"), big, 0o600)
	os.WriteFile(filepath.Join(src, "a.tar.gz"), []byte("a"), 0o600)
	relay.SetDelay(2 * time.Second) // time for the kill to land mid-upload, on a loaded machine too
	errc := make(chan error, 1)
	go func() {
		_, err := s.Put(context.Background(), "src", "pkg", 1, 1, src, []registry.Artifact{{File: "a.tar.gz"}, {File: "big.tar.gz"}})
		errc <- err
	}()
	testenv.Eventually(t, 30*time.Second, "the multipart upload to start", func() bool {
		out, err := b.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(b.Bucket)})
		return err == nil && len(out.Uploads) > 0
	})
	srv.Kill(t)
	if err := <-errc; err == nil {
		t.Fatal("a Put through a killed server succeeded")
	}
	srv.Restart(t)
	relay.SetDelay(0)
	back := bucketOn(t, b, "")
	if got := walk(t, back); len(got) > 1 || (len(got) == 1 && got[0] != "src/pkg/1-1-a.tar.gz") {
		t.Fatalf("after the failed Put the bucket holds %v", got)
	}
	if _, err := back.Open(context.Background(), "src", "pkg", 1, 1, "big.tar.gz"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the half-sent file: %v, want fs.ErrNotExist", err)
	}
	rdb, _ := rds.DB(t)
	sw := &Sweeper{Store: back, Registry: registry.New(rdb), Log: testenv.Logger(t)}
	if _, err := sw.Sweep(context.Background(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	out, err := b.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(b.Bucket)})
	if err != nil || len(out.Uploads) != 0 {
		t.Fatalf("after the sweep, uploads %v (%v)", out.Uploads, err)
	}
	if got := walk(t, back); len(got) != 0 {
		t.Fatalf("after the sweep the bucket holds %v", got)
	}
}
