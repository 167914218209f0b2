package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func (f *fleet) mustSucceed(b *registry.Build) *registry.Build {
	f.t.Helper()
	b = f.wait(b.ID)
	if b.Status != registry.StatusSucceeded {
		f.t.Fatalf("build %d %s: %s\n%s", b.ID, b.Status, b.Detail, f.log(b.ID))
	}
	return b
}

func TestCRANRepositoryServesBuildsToInstallPackages(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "Rscript")
	f := setup(t, nil)
	repo := versionedRepo(t, "r/hellofleet", "DESCRIPTION")
	f.do("POST", "/api/v1/sources", map[string]string{"name": "cran-src", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/cran-src/git-builders", map[string]any{"url": "file://" + repo}, 201)
	old := f.mustSucceed(f.run("/api/v1/sources/cran-src/git-builders/hellofleet/rerun", map[string]string{"tag": "v0.1.0"}))
	cur := f.mustSucceed(f.run("/api/v1/sources/cran-src/git-builders/hellofleet/run", nil))

	// A later commit of the same version that fails must not replace it.
	files := testenv.CopyTree(t, repo)
	delete(files, ".git")
	for k := range files {
		if strings.HasPrefix(k, ".git/") {
			delete(files, k)
		}
	}
	files["DESCRIPTION"] = strings.Replace(files["DESCRIPTION"], "Authors@R: person(", "Authors@R: person(((", 1)
	testenv.Commit(t, repo, files, "broken")
	if b := f.wait(f.run("/api/v1/sources/cran-src/git-builders/hellofleet/run", nil).ID); b.Status != registry.StatusFailed {
		t.Fatalf("broken commit: %s", b.Status)
	}

	packages := string(f.do("GET", "/cran/cran-src/src/contrib/PACKAGES", nil, 200))
	for _, want := range []string{"Package: hellofleet\n", "Version: 0.2.0\n", "License: MIT + file LICENSE\n", "MD5sum: "} {
		if !strings.Contains(packages, want) {
			t.Fatalf("PACKAGES lacks %q:\n%s", want, packages)
		}
	}
	f.do("GET", "/cran/cran-src/src/contrib/PACKAGES.gz", nil, 200)
	f.do("GET", "/cran/cran-src/src/contrib/hellofleet_0.2.0.tar.gz", nil, 200)
	f.do("GET", "/cran/cran-src/src/contrib/Archive/hellofleet/hellofleet_0.1.0.tar.gz", nil, 200)
	f.do("GET", "/cran/cran-src/src/contrib/hellofleet_0.1.0.tar.gz", nil, 404)
	f.do("GET", "/cran/nope/src/contrib/PACKAGES", nil, 404)
	_, _ = old, cur

	lib := t.TempDir()
	script := `repos <- "` + f.api.URL + `/cran/cran-src"
ap <- available.packages(repos = repos)
cat("available:", ap["hellofleet", "Version"], "\n")
install.packages("hellofleet", repos = repos, lib = "` + lib + `", quiet = TRUE)
library(hellofleet, lib.loc = "` + lib + `")
cat(hello("CRAN"), packageDescription("hellofleet", lib.loc = "` + lib + `")$Version, "\n")`
	out, err := exec.Command("Rscript", "-e", script).CombinedOutput()
	if err != nil {
		t.Fatalf("R: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "available: 0.2.0") || !strings.Contains(string(out), "Hello, CRAN! 0.2.0") {
		t.Fatalf("R did not install 0.2.0 from the repository:\n%s", out)
	}
}

func TestPEP503IndexServesBuildsToPip(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	repo := versionedRepo(t, "python/hellofleet-py", "pyproject.toml", "src/hellofleet_py/__init__.py")
	f.do("POST", "/api/v1/sources", map[string]string{"name": "py", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/py/git-builders", map[string]any{"name": "hello", "url": "file://" + repo, "build_trigger": "tags"}, 201)
	f.mustSucceed(f.run("/api/v1/sources/py/git-builders/hello/rerun", map[string]string{"tag": "v0.1.0"}))
	cur := f.mustSucceed(f.run("/api/v1/sources/py/git-builders/hello/run", nil))

	root := string(f.do("GET", "/pypi/py/simple/", nil, 200))
	if !strings.Contains(root, `<a href="hellofleet-py/">hellofleet-py</a>`) {
		t.Fatalf("simple root:\n%s", root)
	}
	page := string(f.do("GET", "/pypi/py/simple/hellofleet-py/", nil, 200))
	var wheelSHA string
	for _, a := range cur.Artifacts {
		if a.Kind == "wheel" {
			wheelSHA = a.SHA256
		}
	}
	if !strings.Contains(page, "#sha256="+wheelSHA) || !strings.Contains(page, `data-requires-python="&gt;=3.8"`) ||
		!strings.Contains(page, "hellofleet_py-0.1.0-py3-none-any.whl") {
		t.Fatalf("project page lacks the hash, requires-python or the older version:\n%s", page)
	}
	// Non-normalized names redirect; the JSON form (PEP 691) lists the same files.
	resp, err := http.Get(f.api.URL + "/pypi/py/simple/Hellofleet_Py/")
	if err != nil || resp.Request.URL.Path != "/pypi/py/simple/hellofleet-py/" {
		t.Fatalf("redirect: %v %v", err, resp.Request.URL)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", f.api.URL+"/pypi/py/simple/hellofleet-py/", nil)
	req.Header.Set("Accept", "application/vnd.pypi.simple.v1+json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var js struct {
		Name  string
		Files []struct {
			Filename       string
			Hashes         map[string]string
			RequiresPython string `json:"requires-python"`
		}
	}
	json.NewDecoder(resp.Body).Decode(&js)
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/vnd.pypi.simple.v1+json" || js.Name != "hellofleet-py" || len(js.Files) != 4 {
		t.Fatalf("PEP 691 JSON: %s %+v", resp.Header.Get("Content-Type"), js)
	}

	venv := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command("/usr/bin/python3", "-m", "venv", venv).CombinedOutput(); err != nil {
		t.Fatalf("venv: %v\n%s", err, out)
	}
	pip := filepath.Join(venv, "bin", "pip")
	dl := t.TempDir()
	index := f.api.URL + "/pypi/py/simple"
	if out, err := exec.Command(pip, "download", "--no-deps", "--only-binary=:all:", "--index-url", index, "-d", dl, "hellofleet-py==0.2.0").CombinedOutput(); err != nil {
		t.Fatalf("pip download: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dl, "hellofleet_py-0.2.0-py3-none-any.whl")); err != nil {
		t.Fatalf("pip download did not fetch the wheel: %v", err)
	}
	if out, err := exec.Command(pip, "install", "--quiet", "--index-url", index, "hellofleet-py==0.2.0").CombinedOutput(); err != nil {
		t.Fatalf("pip install: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(venv, "bin", "python"), "-c", "import hellofleet_py; print(hellofleet_py.__version__)").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "0.2.0" {
		t.Fatalf("import: %v %s", err, out)
	}
}
