package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// The versions a package takes from git (issue 23): a build gets exactly
// the version `python -m build` gives in a full clone of the same commit,
// on a commits builder, at its branch head, at a tagged commit and by a
// rerun by tag. The oracle is the tool itself (setuptools-scm's and
// hatchling's version commands) in a full clone, not a written version.

// systemPython is the interpreter Debian's backends are installed for.
const systemPython = "/usr/bin/python3"

// gitVersionedProjects are a setuptools-scm and a hatch-vcs project, each
// with the command that prints its version in a checkout.
var gitVersionedProjects = []struct {
	name    string
	files   map[string]string
	version []string
}{
	{"scmver", map[string]string{
		"pyproject.toml": `[build-system]
requires = ["setuptools", "setuptools-scm"]
build-backend = "setuptools.build_meta"

[project]
name = "scmver"
dynamic = ["version"]

[tool.setuptools_scm]
`,
		"scmver/__init__.py": "",
	}, []string{systemPython, "-m", "setuptools_scm"}},
	// Debian 12's hatchling names editables as a requirement, which
	// Debian does not package, so build's dependency check would refuse
	// a --no-isolation build that requires hatchling: the project requires
	// nothing, and the backend with its hatch-vcs plugin are Debian's.
	{"hatchver", map[string]string{
		"pyproject.toml": `[build-system]
requires = []
build-backend = "hatchling.build"

[project]
name = "hatchver"
dynamic = ["version"]

[tool.hatch.version]
source = "vcs"

[tool.hatch.build.targets.wheel]
packages = ["hatchver"]
`,
		"hatchver/__init__.py": "",
	}, []string{systemPython, "-m", "hatchling", "version"}},
}

// tagsAndHistory makes a repository of files with an annotated tag
// v1.0.0, a lightweight v1.1.0 three commits later, and 55 commits after
// it; it returns the repository and the tags' commits.
func tagsAndHistory(t *testing.T, files map[string]string) (dir, v100, v110 string) {
	t.Helper()
	dir, v100 = testenv.Repo(t, files)
	testenv.Git(t, dir, "tag", "-a", "v1.0.0", "-m", "release 1.0.0")
	commits(t, dir, 3)
	v110 = testenv.Git(t, dir, "rev-parse", "HEAD")
	testenv.Git(t, dir, "tag", "v1.1.0")
	commits(t, dir, 55)
	return dir, v100, v110
}

// commits adds n commits to main in dir, each changing one file, in one
// git fast-import.
func commits(t *testing.T, dir string, n int) {
	t.Helper()
	var in strings.Builder
	for i := range n {
		from := ""
		if i == 0 {
			from = "from refs/heads/main^0\n"
		}
		body := fmt.Sprintf("change %d\n", i)
		fmt.Fprintf(&in, "commit refs/heads/main\ncommitter t <t@invalid> %d +0000\ndata 7\nchange\n%sM 644 inline CHANGES\ndata %d\n%s\n",
			time.Now().Unix()+int64(i), from, len(body), body)
	}
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir, cmd.Stdin = dir, strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fast-import: %v\n%s", err, out)
	}
}

// fullCloneVersion is what the project's own version command says in a
// full clone of repo at sha: the version python -m build gives there.
func fullCloneVersion(t *testing.T, repo, sha string, version []string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "full")
	testenv.Git(t, t.TempDir(), "clone", "--quiet", "file://"+repo, dir)
	testenv.Git(t, dir, "checkout", "--quiet", sha)
	cmd := exec.Command(version[0], version[1:]...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s in a full clone: %v", strings.Join(version, " "), err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func TestGitVersionedPackagesGetTheVersionOfAFullClone(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t, systemPython, "setuptools_scm", "hatchling", "hatch_vcs")
	f := setup(t, nil)
	f.do("POST", "/api/v1/sources", map[string]string{"name": "versions", "type": "git-python"}, 201)
	type want struct {
		what, project, version string
		build                  *registry.Build
	}
	var wants []want
	for _, p := range gitVersionedProjects {
		repo, v100, v110 := tagsAndHistory(t, p.files)
		head := testenv.Git(t, repo, "rev-parse", "HEAD")
		// A commits builder: it builds its branch head at once.
		f.do("POST", "/api/v1/sources/versions/git-builders",
			map[string]any{"name": p.name, "url": "file://" + repo, "build_trigger": "commits"}, 201)
		path := "/api/v1/sources/versions/git-builders/" + p.name
		wants = append(wants,
			want{p.name + " at its branch head", p.name, fullCloneVersion(t, repo, head, p.version), f.run(path+"/run", nil)},
			want{p.name + " at a tagged commit", p.name, fullCloneVersion(t, repo, v110, p.version), f.run(path+"/rerun", map[string]string{"commit_sha": v110})},
			want{p.name + " by a rerun by tag", p.name, fullCloneVersion(t, repo, v100, p.version), f.run(path+"/rerun", map[string]string{"tag": "v1.0.0"})},
		)
	}
	for _, w := range wants {
		b := f.wait(w.build.ID)
		if b.Status != registry.StatusSucceeded {
			t.Fatalf("%s: build %d %s: %s\n%s", w.what, b.ID, b.Status, b.Detail, f.log(b.ID))
		}
		if b.Version != w.version {
			t.Errorf("%s: built as %q (git describe %q), want the full clone's %q", w.what, b.Version, b.Describe, w.version)
		}
		if b.Describe == "" {
			t.Errorf("%s: the record says no git describe", w.what)
		}
	}
	// The oracle itself: a development version after v1.1.0, and the tags.
	if !strings.HasPrefix(wants[0].version, "1.1.1.dev55") || wants[1].version != "1.1.0" || wants[2].version != "1.0.0" {
		t.Errorf("full clones say %q, %q, %q; want 1.1.1.dev55+…, 1.1.0, 1.0.0", wants[0].version, wants[1].version, wants[2].version)
	}

	// A calendar version is the commit's date (SOURCE_DATE_EPOCH), not
	// the day of the build.
	when := time.Date(2025, 4, 17, 12, 0, 0, 0, time.UTC)
	repo := calverRepo(t, when)
	f.do("POST", "/api/v1/sources/versions/git-builders",
		map[string]any{"name": "calver-demo", "url": "file://" + repo, "build_trigger": "commits"}, 201)
	b := f.wait(f.run("/api/v1/sources/versions/git-builders/calver-demo/run", nil).ID)
	if b.Status != registry.StatusSucceeded || b.Version != "2025.4.17" {
		t.Fatalf("calver build %d %s as %q, want 2025.4.17: %s\n%s", b.ID, b.Status, b.Version, b.Detail, f.log(b.ID))
	}
}

// calverRepo makes a one-commit repository, committed at when, of a
// package whose setup.py takes its version from the date of
// SOURCE_DATE_EPOCH, today's without it (as calver does).
func calverRepo(t *testing.T, when time.Time) string {
	t.Helper()
	dir := t.TempDir()
	testenv.Git(t, dir, "init", "--quiet", "--initial-branch=main")
	files := map[string]string{
		"pyproject.toml": "[build-system]\nrequires = [\"setuptools\"]\nbuild-backend = \"setuptools.build_meta\"\n",
		"setup.py": `import os, time
from setuptools import setup

t = time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", time.time())))
setup(name="calver-demo", version=f"{t.tm_year}.{t.tm_mon}.{t.tm_mday}", py_modules=["calver_demo"])
`,
		"calver_demo.py": "",
	}
	var in strings.Builder
	fmt.Fprintf(&in, "commit refs/heads/main\ncommitter t <t@invalid> %d +0000\ndata 6\ncalver\n", when.Unix())
	for name, body := range files {
		fmt.Fprintf(&in, "M 644 inline %s\ndata %d\n%s\n", name, len(body), body)
	}
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir, cmd.Stdin = dir, strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fast-import: %v\n%s", err, out)
	}
	return dir
}
