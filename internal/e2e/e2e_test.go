package e2e

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/api"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/pkgfleet/pkgfleet/internal/worker"
	"github.com/redis/go-redis/v9"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(testenv.MainWithRedis(m, &redisServer))
}

// fleet is one API and one worker on a Redis database of their own.
type fleet struct {
	t   *testing.T
	api *httptest.Server
	cfg *config.Config
	reg *registry.Registry
	rdb *redis.Client
	wkr *worker.Worker
	// logs and responses collect everything the fleet said, so a test can
	// check that no secret ever appears in them.
	logs      *testenv.Capture
	responses testenv.Capture
}

func setup(t *testing.T, settings map[string]string, tune ...func(*worker.Options)) *fleet {
	t.Helper()
	testenv.Require(t, "git", "R", "python3")
	rdb, db := redisServer.DB(t)
	// Builds may run as an unprivileged user, which must reach its checkout.
	dir := testenv.SharedDir(t)
	env := redisServer.Settings(dir, db)
	env["PKGFLEET_SERVER_SOCKFILEDIR"] = filepath.Join(dir, "run")
	env["PKGFLEET_GIT_BUILDRETRIES"] = "2"
	env["PKGFLEET_GIT_BUILDTIMEOUT"] = "5m"
	env["PKGFLEET_WORKER_CONCURRENCY"] = "2"
	if os.Getenv("PKGFLEET_TEST_UNSANDBOXED") != "" {
		env["PKGFLEET_GIT_ALLOWUNSANDBOXEDGITBUILDS"] = "true"
	}
	for k, v := range settings {
		env[k] = v
	}
	cfg := testenv.Config(t, env)
	for _, d := range []string{cfg.Server.TempDir, cfg.Server.DataDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log, logs := testenv.CapturingLogger(t)
	srv, err := api.NewServer(cfg, rdb, log)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)

	ctx, cancel := context.WithCancel(context.Background())
	opts := worker.Options{
		Name:                     t.Name(),
		RetryDelay:               func(int) time.Duration { return 100 * time.Millisecond },
		TaskCheckInterval:        50 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
	}
	for _, fn := range tune {
		fn(&opts)
	}
	w, err := worker.New(ctx, cfg, log, opts)
	if err != nil {
		cancel()
		t.Fatalf("worker: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	return &fleet{t: t, api: hs, cfg: cfg, reg: registry.New(rdb), rdb: rdb, wkr: w, logs: logs}
}

func (f *fleet) do(method, path string, body any, want int) []byte {
	f.t.Helper()
	out := testenv.JSON(f.t, method, f.api.URL+path, body, want)
	f.responses.Write(out)
	return out
}

func (f *fleet) run(path string, body any) *registry.Build {
	f.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	var resp struct {
		Builds []*registry.Build `json:"builds"`
		New    int               `json:"new"`
	}
	if err := json.Unmarshal(f.do("POST", path, body, http.StatusAccepted), &resp); err != nil || len(resp.Builds) != 1 {
		f.t.Fatalf("run response: %v %+v", err, resp)
	}
	return resp.Builds[0]
}

// wait polls the build until it is finished and returns it.
func (f *fleet) wait(id int64) *registry.Build {
	f.t.Helper()
	var b registry.Build
	testenv.Eventually(f.t, 3*time.Minute, fmt.Sprintf("build %d to finish", id), func() bool {
		if err := json.Unmarshal(f.do("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil, 200), &b); err != nil {
			f.t.Fatal(err)
		}
		return registry.Terminal(b.Status)
	})
	return &b
}

// logStored waits until build id's finished log has left Redis for the
// artifact store (internal/buildlog) and returns the build.
func (f *fleet) logStored(id int64) *registry.Build {
	f.t.Helper()
	var b registry.Build
	testenv.Eventually(f.t, time.Minute, fmt.Sprintf("build %d's log to move into the store", id), func() bool {
		if err := json.Unmarshal(f.do("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil, 200), &b); err != nil {
			f.t.Fatal(err)
		}
		return b.Log != nil
	})
	return &b
}

func (f *fleet) log(id int64) string {
	return string(f.do("GET", fmt.Sprintf("/api/v1/builds/%d/log", id), nil, 200))
}

func (f *fleet) artifact(id int64, file string) string {
	f.t.Helper()
	body := f.do("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts/%s", id, file), nil, 200)
	p := filepath.Join(f.t.TempDir(), file)
	if err := os.WriteFile(p, body, 0o644); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func examples(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "examples", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// versionedRepo makes a git repo of an example package with tags v0.1.0
// and v0.2.0 (files listed get their version bumped).
func versionedRepo(t *testing.T, example string, bump ...string) string {
	t.Helper()
	files := testenv.CopyTree(t, examples(t, example))
	dir, _ := testenv.Repo(t, files)
	testenv.Git(t, dir, "tag", "v0.1.0")
	for _, name := range bump {
		files[name] = strings.ReplaceAll(files[name], "0.1.0", "0.2.0")
	}
	testenv.Commit(t, dir, files, "version 0.2.0")
	testenv.Git(t, dir, "tag", "v0.2.0")
	return dir
}

// versionedRepoFrom makes a one-commit repository of files.
func versionedRepoFrom(t *testing.T, files map[string]string) string {
	t.Helper()
	dir, _ := testenv.Repo(t, files)
	return dir
}

func TestRBuilderBuildsTheBranchHeadIntoAnInstallableTarball(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	repo := versionedRepo(t, "r/hellofleet", "DESCRIPTION")
	f.do("POST", "/api/v1/sources", map[string]string{"name": "internal-r", "type": "git"}, 201)
	// No name: R builders take the package name from DESCRIPTION.
	var bl registry.Builder
	json.Unmarshal(f.do("POST", "/api/v1/sources/internal-r/git-builders",
		map[string]any{"url": "file://" + repo, "branch": "main"}, 201), &bl)
	if bl.Name != "hellofleet" || bl.CloneDepth != 1 || bl.BuildTrigger != "commits" {
		t.Fatalf("builder = %+v, want name hellofleet, clone_depth 1, trigger commits", bl)
	}

	b := f.wait(f.run("/api/v1/sources/internal-r/git-builders/hellofleet/run", nil).ID)
	if b.Status != registry.StatusSucceeded {
		t.Fatalf("build %d %s: %s\n%s", b.ID, b.Status, b.Detail, f.log(b.ID))
	}
	if b.Version != "0.2.0" || len(b.Artifacts) != 1 || b.Artifacts[0].File != "hellofleet_0.2.0.tar.gz" {
		t.Fatalf("build = %+v, want hellofleet_0.2.0.tar.gz", b)
	}
	tarball := f.artifact(b.ID, "hellofleet_0.2.0.tar.gz")
	if desc := tarFile(t, tarball, "hellofleet/DESCRIPTION"); !strings.Contains(desc, "Version: 0.2.0") {
		t.Fatalf("DESCRIPTION inside the tarball:\n%s", desc)
	}
	if log := f.log(b.ID); !strings.Contains(log, "R CMD build") || !strings.Contains(log, "succeeded") {
		t.Fatalf("log lacks the build steps:\n%s", log)
	}

	// R CMD INSTALL accepts it and the package works.
	lib := t.TempDir()
	out, err := exec.Command("R", "CMD", "INSTALL", "-l", lib, tarball).CombinedOutput()
	if err != nil {
		t.Fatalf("R CMD INSTALL: %v\n%s", err, out)
	}
	out, err = exec.Command("Rscript", "-e", fmt.Sprintf(`library(hellofleet, lib.loc = %q); cat(hello("R"))`, lib)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Hello, R!") {
		t.Fatalf("library(hellofleet): %v\n%s", err, out)
	}

	// Rerun by tag builds the older version.
	old := f.wait(f.run("/api/v1/sources/internal-r/git-builders/hellofleet/rerun", map[string]string{"tag": "v0.1.0"}).ID)
	if old.Status != registry.StatusSucceeded || old.Version != "0.1.0" || old.Ref != "v0.1.0" {
		t.Fatalf("rerun --tag v0.1.0 = %+v\n%s", old, f.log(old.ID))
	}
}

func TestPythonTagBuilderBuildsNewestTagIntoSdistAndWheel(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	repo := versionedRepo(t, "python/hellofleet-py", "pyproject.toml", "src/hellofleet_py/__init__.py")
	f.do("POST", "/api/v1/sources", map[string]string{"name": "internal-py", "type": "git-python"}, 201)
	// Python builders must be named.
	f.do("POST", "/api/v1/sources/internal-py/git-builders",
		map[string]any{"url": "file://" + repo, "build_trigger": "tags"}, 400)
	f.do("POST", "/api/v1/sources/internal-py/git-builders",
		map[string]any{"name": "hello", "url": "file://" + repo, "build_trigger": "tags", "tag_pattern": "v*"}, 201)

	b := f.wait(f.run("/api/v1/sources/internal-py/git-builders/hello/run", nil).ID)
	if b.Status != registry.StatusSucceeded {
		t.Fatalf("build %d %s: %s\n%s", b.ID, b.Status, b.Detail, f.log(b.ID))
	}
	if b.Ref != "v0.2.0" || b.Version != "0.2.0" {
		t.Fatalf("run built %s (version %s), want the newest tag v0.2.0", b.Ref, b.Version)
	}
	names := map[string]bool{}
	for _, a := range b.Artifacts {
		names[a.File] = true
	}
	sdist, wheel := "hellofleet_py-0.2.0.tar.gz", "hellofleet_py-0.2.0-py3-none-any.whl"
	if !names[wheel] || len(b.Artifacts) != 2 {
		t.Fatalf("artifacts = %+v, want an sdist and %s", b.Artifacts, wheel)
	}
	if !names[sdist] {
		sdist = "hellofleet-py-0.2.0.tar.gz" // older setuptools keep the dash
		if !names[sdist] {
			t.Fatalf("artifacts = %+v, want an sdist of 0.2.0", b.Artifacts)
		}
	}
	whl := f.artifact(b.ID, wheel)
	if meta := zipFile(t, whl, "hellofleet_py-0.2.0.dist-info/METADATA"); !strings.Contains(meta, "Version: 0.2.0") {
		t.Fatalf("wheel METADATA:\n%s", meta)
	}

	// pip installs the wheel into a fresh venv and it imports.
	venv := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command("/usr/bin/python3", "-m", "venv", venv).CombinedOutput(); err != nil {
		t.Fatalf("venv: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(venv, "bin", "pip"), "install", "--no-index", "--quiet", whl).CombinedOutput(); err != nil {
		t.Fatalf("pip install: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(venv, "bin", "python"), "-c", "import hellofleet_py; print(hellofleet_py.hello('pip'))").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Hello, pip!") {
		t.Fatalf("import: %v\n%s", err, out)
	}
}

// TestAReleaseVersionedFromItsTagGetsTheTagsVersion builds a package that
// takes its version from git (setuptools-scm, as hatch-vcs does) from a
// tag: the checkout carries the tag, so the release is 1.2.3, not a
// development version of no tag.
func TestAReleaseVersionedFromItsTagGetsTheTagsVersion(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	scm := gitVersionedProjects[0] // a setuptools-scm project (versions_test.go)
	repo := versionedRepoFrom(t, scm.files)
	testenv.Git(t, repo, "tag", "v1.2.3")
	f.do("POST", "/api/v1/sources", map[string]string{"name": "scm-py", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/scm-py/git-builders",
		map[string]any{"name": scm.name, "url": "file://" + repo, "build_trigger": "tags"}, 201)
	b := f.wait(f.run("/api/v1/sources/scm-py/git-builders/"+scm.name+"/run", nil).ID)
	if b.Status != registry.StatusSucceeded {
		t.Fatalf("build %d %s: %s\n%s", b.ID, b.Status, b.Detail, f.log(b.ID))
	}
	if b.Ref != "v1.2.3" || b.Version != "1.2.3" {
		t.Fatalf("built %s as version %q, want 1.2.3\n%s", b.Ref, b.Version, f.log(b.ID))
	}
}

func TestBrokenPackageFailsAfterBuildRetriesWithTheReasonInItsLog(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	files := testenv.CopyTree(t, examples(t, "r/hellofleet"))
	// R CMD build checks DESCRIPTION's meta-information and stops here.
	files["DESCRIPTION"] = strings.Replace(files["DESCRIPTION"], `Authors@R: person(`, `Authors@R: person(((`, 1)
	repo, _ := testenv.Repo(t, files)

	f.do("POST", "/api/v1/sources", map[string]string{"name": "r", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/r/git-builders", map[string]any{"name": "broken", "url": "file://" + repo}, 201)
	b := f.wait(f.run("/api/v1/sources/r/git-builders/broken/run", nil).ID)
	if b.Status != registry.StatusFailed {
		t.Fatalf("status = %s, want failed\n%s", b.Status, f.log(b.ID))
	}
	if b.Attempts != 2 || b.MaxAttempts != 2 {
		t.Fatalf("attempts = %d of %d, want 2 of 2 (Git.BuildRetries)", b.Attempts, b.MaxAttempts)
	}
	if !strings.Contains(b.Detail, "R CMD build") {
		t.Fatalf("detail = %q, want the tool's failure", b.Detail)
	}
	log := f.log(b.ID)
	if strings.Count(log, "==> pkgfleet build") != 2 || !strings.Contains(log, "Malformed Authors@R field") {
		t.Fatalf("log should show both attempts and the tool's error:\n%s", log)
	}
}

func TestSameCommitRunTwiceBuildsOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	repo := versionedRepo(t, "r/hellofleet", "DESCRIPTION")
	f.do("POST", "/api/v1/sources", map[string]string{"name": "r", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/r/git-builders", map[string]any{"name": "hello", "url": "file://" + repo}, 201)
	first := f.run("/api/v1/sources/r/git-builders/hello/run", nil)
	second := f.run("/api/v1/sources/r/git-builders/hello/run", nil)
	sha := testenv.Git(t, repo, "rev-parse", "v0.2.0")
	bySha := f.run("/api/v1/sources/r/git-builders/hello/rerun", map[string]string{"commit_sha": sha})
	if second.ID != first.ID || bySha.ID != first.ID {
		t.Fatalf("builds %d, %d, %d: the same commit must build once", first.ID, second.ID, bySha.ID)
	}
	if b := f.wait(first.ID); b.Status != registry.StatusSucceeded || b.Attempts != 1 {
		t.Fatalf("build = %s after %d attempts: %s", b.Status, b.Attempts, b.Detail)
	}
	// Once built, run again returns the same build instead of rebuilding.
	if again := f.run("/api/v1/sources/r/git-builders/hello/run", nil); again.ID != first.ID {
		t.Fatalf("run after success made build %d, want %d", again.ID, first.ID)
	}
	var list struct{ Builds []registry.Build }
	json.Unmarshal(f.do("GET", "/api/v1/builds?source=r&builder=hello", nil, 200), &list)
	if len(list.Builds) != 1 {
		t.Fatalf("%d builds listed, want 1", len(list.Builds))
	}
}

func tarFile(t *testing.T, file, member string) string {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	gz, err := gzip.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no %s (%v)", file, member, err)
		}
		if h.Name == member {
			b, _ := io.ReadAll(tr)
			return string(b)
		}
	}
}

func zipFile(t *testing.T, file, member string) string {
	t.Helper()
	z, err := zip.OpenReader(file)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	rc, err := z.Open(member)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}
