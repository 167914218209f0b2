package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pkgfleet/pkgfleet/internal/api"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/pkgfleet/pkgfleet/internal/worker"
)

// The S3 tests are not parallel: the API and the worker find their
// credentials through the AWS default chain, in the environment, which
// is the process's. Go runs them before releasing the parallel tests.

// s3Fleet is a fleet whose artifacts are in bucket b.
func s3Fleet(t *testing.T, b testenv.S3Bucket, tune ...func(*worker.Options)) *fleet {
	t.Helper()
	for _, kv := range b.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return setup(t, b.Settings(), tune...)
}

// objects lists the bucket's keys.
func objects(t *testing.T, b testenv.S3Bucket) []string {
	t.Helper()
	out, err := b.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(b.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

func artifactOf(t *testing.T, b *registry.Build, suffix string) registry.Artifact {
	t.Helper()
	for _, a := range b.Artifacts {
		if strings.HasSuffix(a.File, suffix) {
			return a
		}
	}
	t.Fatalf("build %d has no %s artifact: %+v", b.ID, suffix, b.Artifacts)
	return registry.Artifact{}
}

func curl(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := exec.Command("curl", append([]string{"-sS", "--fail"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	return out
}

// TestRAndPythonBuildsIntoS3AreInstalledFromTheIndex: builds store their
// artifacts in the bucket (and nothing on disk), install.packages and pip
// install them from the indexes served out of S3, curl's ranges and HEAD
// work, and an object deleted behind pkgfleet's back is a logged 404 for
// that file while the rest is served.
func TestRAndPythonBuildsIntoS3AreInstalledFromTheIndex(t *testing.T) {
	testenv.Require(t, "Rscript", "curl")
	b := testenv.S3(t)
	f := s3Fleet(t, b)

	f.do("POST", "/api/v1/sources", map[string]string{"name": "cran-src", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/cran-src/git-builders", map[string]any{"url": "file://" + versionedRepo(t, "r/hellofleet", "DESCRIPTION")}, 201)
	rb := f.mustSucceed(f.run("/api/v1/sources/cran-src/git-builders/hellofleet/run", nil))
	f.do("POST", "/api/v1/sources", map[string]string{"name": "py", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/py/git-builders", map[string]any{"name": "hello", "url": "file://" + versionedRepo(t, "python/hellofleet-py", "pyproject.toml", "src/hellofleet_py/__init__.py")}, 201)
	pb := f.mustSucceed(f.run("/api/v1/sources/py/git-builders/hello/run", nil))
	tarball, wheel, sdist := artifactOf(t, rb, ".tar.gz"), artifactOf(t, pb, ".whl"), artifactOf(t, pb, ".tar.gz")

	keys := strings.Join(objects(t, b), " ")
	for _, want := range []string{
		fmt.Sprintf("cran-src/hellofleet/%d-%d-%s", rb.ID, rb.AttemptToken, tarball.File),
		fmt.Sprintf("py/%s/%d-%d-%s", pb.Package, pb.ID, pb.AttemptToken, wheel.File),
	} {
		if !strings.Contains(keys, want) {
			t.Fatalf("the bucket lacks %s: %s", want, keys)
		}
	}
	_ = filepath.WalkDir(f.cfg.FileStorage.Location, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			t.Errorf("an artifact on disk with Storage.Default = s3: %s", p)
		}
		return nil
	})

	lib := t.TempDir()
	out, err := exec.Command("Rscript", "-e", `repos <- "`+f.api.URL+`/cran/cran-src"
install.packages("hellofleet", repos = repos, lib = "`+lib+`", quiet = TRUE)
library(hellofleet, lib.loc = "`+lib+`")
cat(hello("S3"), "\n")`).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Hello, S3!") {
		t.Fatalf("install.packages from the index out of S3: %v\n%s", err, out)
	}
	venv := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command("/usr/bin/python3", "-m", "venv", venv).CombinedOutput(); err != nil {
		t.Fatalf("venv: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(venv, "bin", "pip"), "install", "--no-deps", "--index-url", f.api.URL+"/pypi/py/simple", "hellofleet-py").CombinedOutput(); err != nil {
		t.Fatalf("pip install from the index out of S3: %v\n%s", err, out)
	}

	// Ranges and HEAD, as curl asks them.
	url := fmt.Sprintf("%s/api/v1/builds/%d/artifacts/%s", f.api.URL, pb.ID, wheel.File)
	whole := curl(t, url)
	if sum := sha256.Sum256(whole); hex.EncodeToString(sum[:]) != wheel.SHA256 {
		t.Fatalf("the wheel served does not match its record's sha256")
	}
	if part := curl(t, "-r", "10-109", url); !bytes.Equal(part, whole[10:110]) {
		t.Fatalf("range 10-109: %d bytes, not the file's", len(part))
	}
	if tail := curl(t, "-r", "-20", url); !bytes.Equal(tail, whole[len(whole)-20:]) {
		t.Fatalf("range -20: %q", tail)
	}
	head := string(curl(t, "-I", url))
	if !strings.Contains(head, "200 OK") || !strings.Contains(strings.ToLower(head), fmt.Sprintf("content-length: %d", len(whole))) {
		t.Fatalf("HEAD:\n%s", head)
	}

	// Deleted behind pkgfleet's back: a logged 404 for that file only.
	key := fmt.Sprintf("py/%s/%d-%d-%s", pb.Package, pb.ID, pb.AttemptToken, wheel.File)
	if _, err := b.Client().DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(b.Bucket), Key: aws.String(key)}); err != nil {
		t.Fatal(err)
	}
	f.do("GET", fmt.Sprintf("/pypi/py/files/%d/%s", pb.ID, wheel.File), nil, http.StatusNotFound)
	f.do("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts/%s", pb.ID, wheel.File), nil, http.StatusNotFound)
	f.do("GET", fmt.Sprintf("/pypi/py/files/%d/%s", pb.ID, sdist.File), nil, http.StatusOK)
	f.do("GET", "/cran/cran-src/src/contrib/"+tarball.File, nil, http.StatusOK)
	if !strings.Contains(f.logs.String(), "missing from the store") || !strings.Contains(f.logs.String(), wheel.File) {
		t.Fatal("the missing object was not logged")
	}
}

// TestABuildWhoseS3DiesMidUploadRetries: the S3 server is killed while a
// build's upload is under way; that attempt fails, the build is retried
// once the server is back and succeeds, and what is served is the
// recorded attempt's bytes.
func TestABuildWhoseS3DiesMidUploadRetries(t *testing.T) {
	srv := testenv.NewS3Server(t)
	b := srv.Bucket(t)
	slow, relay := b.Slow(t, 0)
	f := s3Fleet(t, slow)
	f.do("POST", "/api/v1/sources", map[string]string{"name": "s", "type": "git"}, 201)
	// A tarball of several parts: its multipart upload is under way, its
	// parts not sent, while the relay holds back the server's answer to
	// the upload's creation (5s, which the relay cannot cut short). Then
	// the server is killed.
	blob := make([]byte, 12<<20)
	_, _ = rand.NewChaCha8([32]byte{}).Read(blob)
	repo, _ := testenv.Repo(t, map[string]string{
		"DESCRIPTION": "Package: blobfleet\nVersion: 1.0.0\nTitle: Big\nDescription: A big tarball.\nLicense: MIT\n" +
			"Author: pkgfleet\nMaintainer: pkgfleet <pkgfleet@example.org>\n",
		"NAMESPACE":             "export(blob)\n",
		"R/blob.R":              "blob <- function() system.file(\"extdata\", \"blob.bin\", package = \"blobfleet\")\n",
		"inst/extdata/blob.bin": string(blob),
	})
	f.do("POST", "/api/v1/sources/s/git-builders", map[string]any{"url": "file://" + repo}, 201)
	relay.SetDelay(5 * time.Second)
	id := f.run("/api/v1/sources/s/git-builders/blobfleet/run", nil).ID
	testenv.Eventually(t, 3*time.Minute, "the build to store its files", func() bool { return strings.Contains(f.log(id), "==> storing") })
	srv.Kill(t)
	testenv.Eventually(t, 40*time.Second, "the attempt to fail", func() bool { return strings.Contains(f.log(id), "==> failed") })
	relay.SetDelay(0)
	srv.Restart(t)
	got := f.mustSucceed(&registry.Build{ID: id})
	if got.Attempts != 2 {
		t.Fatalf("attempts = %d, want 2", got.Attempts)
	}
	a := artifactOf(t, got, ".tar.gz")
	body := f.do("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts/%s", id, a.File), nil, 200)
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != a.SHA256 || int64(len(body)) != a.Size {
		t.Fatal("the artifact served is not the one recorded")
	}
	// The failed attempt's upload never completed: no object of it. The
	// recorded attempt's artifact and, once moved, its log are all there is.
	f.logStored(id)
	want := []string{fmt.Sprintf("/%d-%d-%s", id, got.AttemptToken, a.File), fmt.Sprintf("/%d-%d-build.log.gz", id, got.AttemptToken)}
	if keys := objects(t, b); len(keys) != 2 || !strings.HasSuffix(keys[0], want[0]) && !strings.HasSuffix(keys[1], want[0]) ||
		!strings.HasSuffix(keys[0], want[1]) && !strings.HasSuffix(keys[1], want[1]) {
		t.Fatalf("the bucket holds %v, want only the recorded attempt's file and log (%v)", keys, want)
	}
}

// TestAStoreThatRefusesIsOneLineAtStartup: wrong credentials or a
// missing bucket: the API does not start and the worker takes no builds,
// each saying why in one line naming the bucket and the endpoint, never
// the secret key.
func TestAStoreThatRefusesIsOneLineAtStartup(t *testing.T) {
	b := testenv.S3(t)
	wrong, missing := b, b
	wrong.SecretKey = "wrong" + b.SecretKey
	missing.Bucket = "no-such-bucket"
	for name, c := range map[string]testenv.S3Bucket{"wrong credentials": wrong, "missing bucket": missing} {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			f := s3Fleet(t, c)
			var refusal string
			testenv.Eventually(t, time.Minute, "the worker to report its store's refusal", func() bool {
				refusal = f.wkr.Info().StoreRefusal
				return refusal != ""
			})
			check := func(who, msg string) {
				if strings.Contains(msg, "\n") || !strings.Contains(msg, c.Bucket) || !strings.Contains(msg, c.Endpoint) || strings.Contains(msg, b.SecretKey) {
					t.Errorf("%s: %q, want one line naming bucket and endpoint, without the secret", who, msg)
				}
			}
			check("worker", refusal)
			if strings.Contains(f.logs.String(), b.SecretKey) {
				t.Error("the secret key is in the logs")
			}
			cfg := *f.cfg
			cfg.HTTP.Listen = "127.0.0.1:0"
			err := api.Run(context.Background(), &cfg, testenv.Logger(t))
			if err == nil {
				t.Fatal("the API started on a store that refuses")
			}
			check("api", err.Error())
		})
	}
}

// TestBuildsFinishOnASlowS3: every answer of the server is held back 2s;
// the build still succeeds, and its store phase shows the wait.
func TestBuildsFinishOnASlowS3(t *testing.T) {
	slow, _ := testenv.S3(t).Slow(t, 2*time.Second)
	f := s3Fleet(t, slow)
	f.do("POST", "/api/v1/sources", map[string]string{"name": "s", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/s/git-builders", map[string]any{"url": "file://" + versionedRepo(t, "r/hellofleet", "DESCRIPTION")}, 201)
	b := f.mustSucceed(f.run("/api/v1/sources/s/git-builders/hellofleet/run", nil))
	var store float64
	for _, p := range b.Phases {
		if p.Phase == registry.PhaseStore {
			store = p.MS
		}
	}
	if store < 2000 {
		t.Fatalf("store phase %.0f ms, want at least the relay's 2s: %+v", store, b.Phases)
	}
	a := artifactOf(t, b, ".tar.gz")
	f.do("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts/%s", b.ID, a.File), nil, 200)
}

// TestStorageCopyMovesAFleetToS3: a fleet built on disk; pkgfleet-api
// storage copy --to s3 puts its artifacts in the bucket (again: nothing
// to do), and an API on the bucket then serves them to install.packages.
func TestStorageCopyMovesAFleetToS3(t *testing.T) {
	testenv.Require(t, "Rscript")
	f := setup(t, nil)
	f.do("POST", "/api/v1/sources", map[string]string{"name": "s", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/s/git-builders", map[string]any{"url": "file://" + versionedRepo(t, "r/hellofleet", "DESCRIPTION")}, 201)
	b := f.mustSucceed(f.run("/api/v1/sources/s/git-builders/hellofleet/run", nil))
	f.logStored(b.ID) // the copy takes the build's log too

	bucket := testenv.S3(t)
	for _, kv := range bucket.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	cfg := *f.cfg
	cfg.S3Storage.Bucket, cfg.S3Storage.Region, cfg.S3Storage.Endpoint, cfg.S3Storage.EnablePathStyle = bucket.Bucket, bucket.Region, bucket.Endpoint, true
	for run, want := range []string{"2 files copied, 0 already there", "0 files copied, 2 already there"} {
		var out, errs bytes.Buffer
		if code := api.StorageCommand(context.Background(), &cfg, []string{"copy", "--to", "s3"}, &out, &errs); code != 0 || !strings.Contains(out.String(), want) {
			t.Fatalf("run %d: exit %d, %q, %s", run+1, code, out.String(), errs.String())
		}
	}
	cfg.Storage.Default = "s3"
	srv, err := api.NewServer(&cfg, f.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	a := artifactOf(t, b, ".tar.gz")
	if sum := sha256.Sum256(curl(t, fmt.Sprintf("%s/api/v1/builds/%d/artifacts/%s", hs.URL, b.ID, a.File))); hex.EncodeToString(sum[:]) != a.SHA256 {
		t.Fatal("the artifact served from the bucket is not the recorded one")
	}
	lib := t.TempDir()
	out, err := exec.Command("Rscript", "-e", `install.packages("hellofleet", repos = "`+hs.URL+`/cran/s", lib = "`+lib+`", quiet = TRUE)
library(hellofleet, lib.loc = "`+lib+`"); cat(hello("copy"), "\n")`).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Hello, copy!") {
		t.Fatalf("install.packages after the copy: %v\n%s", err, out)
	}
}
