package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/door"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/pkgfleet/pkgfleet/internal/worker"
	"github.com/redis/go-redis/v9"
)

// doorRepo makes a one-commit repository of testdata/door/<name>.
func doorRepo(t *testing.T, name string) string {
	t.Helper()
	return versionedRepoFrom(t, testenv.CopyTree(t, filepath.Join("testdata", "door", name)))
}

// The fleet hosts its own build toolchain: a PEP 517 backend and a dynamic
// requirement are built offline into one source, and a package that needs
// both builds from another source with that source's index behind its
// door. A package whose requirement the index lacks fails in one line.
func TestPythonBuildGetsItsRequirementsFromTheFleetsOwnIndexThroughTheDoor(t *testing.T) {
	t.Parallel()
	f := setup(t, testenv.AllowLoopback(map[string]string{})) // the fleet's own index is on loopback
	f.do("POST", "/api/v1/sources", map[string]string{"name": "tools", "type": "git-python"}, 201)
	tools := map[string]*registry.Build{}
	for _, name := range []string{"fleetbackend", "fleetextra"} {
		f.do("POST", "/api/v1/sources/tools/git-builders", map[string]any{"name": name, "url": "file://" + doorRepo(t, name)}, 201)
		tools[name] = f.mustSucceed(f.run("/api/v1/sources/tools/git-builders/"+name+"/run", nil))
		if len(tools[name].Fetched) != 0 {
			t.Errorf("offline build of %s fetched %+v", name, tools[name].Fetched)
		}
	}

	index := f.api.URL + "/pypi/tools/simple/"
	f.do("POST", "/api/v1/sources", map[string]string{"name": "apps", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/apps/git-builders", map[string]any{
		"name": "needsbackend", "url": "file://" + doorRepo(t, "needsbackend"), "python_index_url": index}, 201)
	b := f.mustSucceed(f.run("/api/v1/sources/apps/git-builders/needsbackend/run", nil))
	log := f.log(b.ID)
	if b.Package != "needsbackend" || !strings.Contains(log, "through the door") {
		t.Fatalf("build %+v\n%s", b, log)
	}
	// Provenance: both requirements, with the sha256 of the very wheels
	// the tools source holds.
	want := map[string]string{}
	for name, tb := range tools {
		for _, a := range tb.Artifacts {
			if a.Kind == "wheel" {
				want[name] = a.SHA256
			}
		}
	}
	got := map[string]string{}
	for _, fe := range b.Fetched {
		// Once per file, with the environments that asked for it: the
		// backend both python -m build's, the extra the one that named it.
		if _, twice := got[fe.Name]; twice || len(fe.Environments) == 0 ||
			fe.Name == "fleetbackend" && strings.Join(fe.Environments, "+") != "sdist+wheel" {
			t.Errorf("fetched %+v: want each file once, the backend for the sdist and the wheel", fe)
		}
		got[fe.Name] = fe.SHA256
		if fe.Version == "" || !strings.HasSuffix(fe.File, ".whl") {
			t.Errorf("fetched %+v lacks a version or is no wheel", fe)
		}
	}
	if len(got) != 2 || got["fleetbackend"] != want["fleetbackend"] || got["fleetextra"] != want["fleetextra"] {
		t.Fatalf("fetched %+v, want fleetbackend and fleetextra with sha256 %v\n%s", b.Fetched, want, log)
	}
	raw := f.do("GET", fmt.Sprintf("/api/v1/builds/%d", b.ID), nil, 200)
	var rec map[string]any
	_ = json.Unmarshal(raw, &rec)
	if _, ok := rec["fetched"]; !ok {
		t.Errorf("the API's build record has no \"fetched\": %s", raw)
	}

	f.do("POST", "/api/v1/sources/apps/git-builders", map[string]any{
		"name": "needsmissing", "url": "file://" + doorRepo(t, "needsmissing"), "python_index_url": index}, 201)
	m := f.wait(f.run("/api/v1/sources/apps/git-builders/needsmissing/run", nil).ID)
	if m.Status != registry.StatusFailed || strings.Contains(m.Detail, "\n") ||
		!strings.Contains(m.Detail, "pkgfleet-absent-requirement") || !strings.Contains(m.Detail, "Git.PythonIndexURL") {
		t.Fatalf("missing requirement: %s %q\n%s", m.Status, m.Detail, f.log(m.ID))
	}
	// A failed build still says what it fetched: the backend came through
	// the door before the missing requirement stopped it.
	if len(m.Fetched) != 1 || m.Fetched[0].Name != "fleetbackend" || m.Fetched[0].SHA256 != want["fleetbackend"] {
		t.Errorf("failed build fetched %+v, want fleetbackend with sha256 %s", m.Fetched, want["fleetbackend"])
	}
	// The CLI shows the provenance of both, succeeded and failed: name,
	// version and the sha256's prefix.
	out, _, code := f.pkgfleet("list", "git-builds", "--source", "apps")
	for _, bb := range []*registry.Build{b, m} {
		for _, fe := range bb.Fetched {
			if cell := fmt.Sprintf("%s %s sha256:%s", fe.Name, fe.Version, fe.SHA256[:12]); code != 0 || !strings.Contains(out, cell) {
				t.Errorf("list git-builds does not show build %d's %q:\n%s", bb.ID, cell, out)
			}
		}
	}
	if !strings.Contains(out, "FETCHED") {
		t.Errorf("list git-builds has no FETCHED column:\n%s", out)
	}
}

// By default the door reaches no loopback port of the worker's host, even
// through a name: a builder whose index is a loopback address is refused
// at creation (400, the one-line reason), and one whose index is named
// "localhost" is built, but its door refuses the connection, and the build
// log and the build's record say why.
func TestTheDoorRefusesALoopbackIndexByDefault(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	f.do("POST", "/api/v1/sources", map[string]string{"name": "tools", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/tools/git-builders", map[string]any{"name": "fleetbackend", "url": "file://" + doorRepo(t, "fleetbackend")}, 201)
	f.mustSucceed(f.run("/api/v1/sources/tools/git-builders/fleetbackend/run", nil))
	index := f.api.URL + "/pypi/tools/simple/"
	f.do("POST", "/api/v1/sources", map[string]string{"name": "apps", "type": "git-python"}, 201)
	body := string(f.do("POST", "/api/v1/sources/apps/git-builders", map[string]any{
		"name": "literal", "url": "file://" + doorRepo(t, "needsbackend"), "python_index_url": index}, 400))
	if !strings.Contains(body, "is refused by the outbound policy (loopback); allow it with Git.AllowedHosts") {
		t.Errorf("a loopback index at creation: %s", body)
	}
	named := strings.Replace(index, "127.0.0.1", "localhost", 1)
	f.do("POST", "/api/v1/sources/apps/git-builders", map[string]any{
		"name": "needsbackend", "url": "file://" + doorRepo(t, "needsbackend"), "python_index_url": named}, 201)
	b := f.wait(f.run("/api/v1/sources/apps/git-builders/needsbackend/run", nil).ID)
	log := f.log(b.ID)
	if b.Status != registry.StatusFailed || len(b.Fetched) != 0 ||
		!strings.Contains(log, "package index host localhost:") || !strings.Contains(log, "is refused by the outbound policy (loopback)") {
		t.Fatalf("build through a door to localhost: %s %+v\n%s", b.Status, b.Fetched, log)
	}
}

// From inside a sandboxed build with a door to the fleet's own index, the
// index answers and nothing else does: not the API beside it on the same
// port, not Redis, not a host service on loopback, not another host; not
// through the door, not around it.
func TestFromInsideABuildWithADoorOnlyTheIndexAnswers(t *testing.T) {
	t.Parallel()
	f := setup(t, testenv.AllowLoopback(map[string]string{}))
	f.do("POST", "/api/v1/sources", map[string]string{"name": "tools", "type": "git-python"}, 201)
	redisAddr := tcpRedis(t)
	host := testenv.HostService(t, "HOST SERVICE\n").Addr().String()
	runner, err := sandbox.New(worker.SandboxConfig(f.cfg))
	if err != nil {
		t.Fatal(err)
	}
	var doorLog, out testenv.Capture
	d, err := door.New(&doorLog, door.Index{URL: f.api.URL + "/pypi/tools/simple/", Kind: door.Python})
	if err != nil {
		t.Fatal(err)
	}
	if d.Net, err = f.cfg.Outbound(); err != nil {
		t.Fatal(err)
	}
	probe, err := os.ReadFile(filepath.Join("testdata", "door", "probe.py"))
	if err != nil {
		t.Fatal(err)
	}
	dest := testenv.SharedDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := runner.Run(ctx, sandbox.Spec{
		Args: []string{"/usr/bin/python3", "-c", string(probe), d.BuildURL(0), f.api.URL + "/api/v1/sources", redisAddr, host},
		Env:  []string{"PATH=/usr/bin:/bin", "HOME=" + dest}, Dir: dest, Dest: dest, Door: d, Output: &out,
	})
	if err != nil || !res.Success() {
		t.Fatalf("probe: %+v %v\n%s", res, err, out.String())
	}
	want := map[string]string{
		"index": "200", "api": "403", "dot-segments": "403", "redis": "403", "redis-tunnel": "403",
		"host-service": "403", "other-host": "403", "other-host-tunnel": "403",
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		name, result, _ := strings.Cut(line, " ")
		got[name] = result
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %q, want %s", name, got[name], w)
		}
	}
	for _, name := range []string{"direct-redis", "direct-host-service", "direct-api", "direct-other-host"} {
		if r, ok := got[name]; !ok || r == "open" {
			t.Errorf("%s: %q, want no connection", name, r)
		}
	}
	if t.Failed() {
		t.Logf("probe output:\n%s\ndoor log:\n%s", out.String(), doorLog.String())
	}
	for _, w := range []string{"==> door: refused GET http://" + redisAddr + "/: only " + f.api.URL + "/pypi/tools/simple/ is reachable",
		"==> door: refused CONNECT 192.0.2.1:443", "only paths below " + f.api.URL + "/pypi/tools/simple/"} {
		if !strings.Contains(doorLog.String(), w) {
			t.Errorf("door log lacks %q:\n%s", w, doorLog.String())
		}
	}
}

// tcpRedis starts a redis-server of the test's own on a loopback TCP port
// (the package's shared one listens on a unix socket only).
func tcpRedis(t *testing.T) string {
	t.Helper()
	testenv.Require(t, "redis-server")
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	_, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	testenv.Eventually(t, 20*time.Second, "redis-server on "+addr, func() bool {
		return rdb.Ping(context.Background()).Err() == nil
	})
	return addr
}

// An R builder with build_vignettes gets the vignette engine its package
// names (VignetteBuilder) from the fleet's own CRAN-like repository through
// the door; the vignette is in the tarball and, once installed, in R. The
// same package without a repository fails in one line that says so.
func TestRVignettesGetTheirEngineFromTheFleetsOwnRepositoryThroughTheDoor(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "Rscript")
	f := setup(t, testenv.AllowLoopback(map[string]string{}))
	f.do("POST", "/api/v1/sources", map[string]string{"name": "rtools", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/rtools/git-builders", map[string]any{"url": "file://" + doorRepo(t, "fleetvig")}, 201)
	engine := f.mustSucceed(f.run("/api/v1/sources/rtools/git-builders/fleetvig/run", nil))

	f.do("POST", "/api/v1/sources", map[string]string{"name": "rapps", "type": "git"}, 201)
	repo := doorRepo(t, "vigpkg")
	f.do("POST", "/api/v1/sources/rapps/git-builders", map[string]any{"url": "file://" + repo,
		"build_vignettes": true, "r_repository_url": f.api.URL + "/cran/rtools"}, 201)
	b := f.mustSucceed(f.run("/api/v1/sources/rapps/git-builders/vigpkg/run", nil))
	if len(b.Fetched) != 1 || b.Fetched[0].Name != "fleetvig" || b.Fetched[0].Version != "1.0.0" ||
		b.Fetched[0].SHA256 != engine.Artifacts[0].SHA256 {
		t.Fatalf("fetched %+v, want fleetvig 1.0.0 with sha256 %s\n%s", b.Fetched, engine.Artifacts[0].SHA256, f.log(b.ID))
	}
	tarball := f.artifact(b.ID, b.Artifacts[0].File)
	lib := testenv.SharedDir(t)
	script := `install.packages("` + tarball + `", repos = NULL, type = "source", lib = "` + lib + `", quiet = TRUE)
v <- vignette(package = "vigpkg", lib.loc = "` + lib + `")$results
cat("vignettes:", v[, "Item"], "|", v[, "Title"], "\n")
cat("html:", file.exists(file.path("` + lib + `", "vigpkg", "doc", "intro.html")), "\n")`
	out, err := exec.Command("Rscript", "-e", script).CombinedOutput()
	if err != nil {
		t.Fatalf("R: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "vignettes: intro | Introduction to vigpkg") || !strings.Contains(string(out), "html: TRUE") {
		t.Fatalf("the installed package lacks its vignette:\n%s", out)
	}

	// No repository: the engine is nowhere, and the reason says what to set.
	f.do("POST", "/api/v1/sources/rapps/git-builders", map[string]any{"name": "offline", "url": "file://" + repo, "build_vignettes": true}, 201)
	m := f.wait(f.run("/api/v1/sources/rapps/git-builders/offline/run", nil).ID)
	if m.Status != registry.StatusFailed || strings.Contains(m.Detail, "\n") ||
		!strings.Contains(m.Detail, "fleetvig") || !strings.Contains(m.Detail, "Git.RRepositoryURL") {
		t.Fatalf("vignettes without a repository: %s %q\n%s", m.Status, m.Detail, f.log(m.ID))
	}
}
