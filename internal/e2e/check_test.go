package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// The check stage of issue 26: R CMD check --as-cran of a package that
// imports a package only the fleet's own repository has (installed through
// the door into the build's library) and warns of its undocumented export.
// Without check_gates the WARNING is recorded and the tarball published;
// with it the build fails, unpublished, with the reason in one line.
func TestRCheckWarningIsRecordedAndPublishedAndHeldBackOnlyWithTheGate(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "Rscript")
	f := setup(t, testenv.AllowLoopback(map[string]string{"PKGFLEET_WORKER_METRICSLISTEN": "127.0.0.1:0"}))
	f.do("POST", "/api/v1/sources", map[string]string{"name": "deps", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/deps/git-builders", map[string]any{"url": "file://" + checkRepo(t, "fleetdep")}, 201)
	dep := f.mustSucceed(f.run("/api/v1/sources/deps/git-builders/fleetdep/run", nil))
	if dep.Check != nil {
		t.Fatalf("a builder without check recorded one: %+v", dep.Check)
	}

	f.do("POST", "/api/v1/sources", map[string]string{"name": "checked", "type": "git"}, 201)
	repo := checkRepo(t, "warnpkg")
	repository := f.api.URL + "/cran/deps"
	f.do("POST", "/api/v1/sources/checked/git-builders", map[string]any{"url": "file://" + repo, "check": true, "r_repository_url": repository}, 201)
	b := f.mustSucceed(f.run("/api/v1/sources/checked/git-builders/warnpkg/run", nil))
	c := b.Check
	if c == nil || c.Verdict != registry.CheckWarning || c.Warnings < 1 || c.Errors != 0 || c.Gated ||
		!strings.Contains(c.Summary, "checking for missing documentation entries ... WARNING") {
		t.Fatalf("check = %+v, want a WARNING for the undocumented export, not gated (an ERROR would mean fleetdep was not installed)\n%s", c, f.log(b.ID))
	}
	if len(b.Fetched) != 1 || b.Fetched[0].Name != "fleetdep" || b.Fetched[0].SHA256 != dep.Artifacts[0].SHA256 {
		t.Fatalf("fetched %+v, want fleetdep from the fleet's own repository", b.Fetched)
	}
	if !hasPhase(b, registry.PhaseCheck) {
		t.Fatalf("phases %+v lack %q", b.Phases, registry.PhaseCheck)
	}
	log := f.log(b.ID)
	if !strings.Contains(log, "==> R CMD check --no-manual --as-cran warnpkg_0.1.0.tar.gz") || !strings.Contains(log, "Undocumented code objects") ||
		!strings.Contains(log, "==> check verdict: WARNING") {
		t.Fatalf("the log lacks the check's section:\n%s", log)
	}
	// Published: the repository lists it.
	if packages := string(f.do("GET", "/cran/checked/src/contrib/PACKAGES", nil, 200)); !strings.Contains(packages, "Package: warnpkg") {
		t.Fatalf("an ungated WARNING kept the package from its repository:\n%s", packages)
	}

	// The same package, gated: failed, nothing published, one line.
	f.do("POST", "/api/v1/sources", map[string]string{"name": "gated", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/gated/git-builders", map[string]any{"url": "file://" + repo, "check": true, "check_gates": true, "r_repository_url": repository}, 201)
	g := f.wait(f.run("/api/v1/sources/gated/git-builders/warnpkg/run", nil).ID)
	if g.Status != registry.StatusFailed || len(g.Artifacts) != 0 || g.Check == nil || !g.Check.Gated || g.Check.Verdict != registry.CheckWarning ||
		strings.Contains(g.Detail, "\n") || !strings.HasPrefix(g.Detail, "R CMD check: ") ||
		!strings.HasSuffix(g.Detail, "checking for missing documentation entries ... WARNING (check_gates: not published)") {
		t.Fatalf("gated build = %s %q, artifacts %+v, check %+v; want failed, unpublished, the reason in one line\n%s", g.Status, g.Detail, g.Artifacts, g.Check, f.log(g.ID))
	}
	// A WARNING says the same on every attempt: it is not retried.
	if g.Attempts != 1 {
		t.Fatalf("the gated build ran %d attempts, want 1", g.Attempts)
	}
	if packages := string(f.do("GET", "/cran/gated/src/contrib/PACKAGES", nil, 200)); strings.Contains(packages, "warnpkg") {
		t.Fatalf("a gated build was published:\n%s", packages)
	}

	var ops string
	testenv.Eventually(t, 10*time.Second, "the worker's metrics listener", func() bool { ops = f.wkr.OpsAddr(); return ops != "" })
	if m := scrape(t, "http://"+ops+"/metrics"); !strings.Contains(m, `pkgfleet_build_checks_total{verdict="WARNING"} 2`) {
		t.Fatalf("worker metrics lack the two WARNINGs:\n%s", grepLines(m, "pkgfleet_build_checks_total"))
	}
}

// A Python builder's check_command runs the project's tests in the
// checkout, with the package importable: one passes, one fails, so the
// verdict is ERROR; without the gate the build is published.
func TestPythonCheckCommandThatFailsIsAnErrorVerdict(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	files := testenv.CopyTree(t, examples(t, "python/hellofleet-py"))
	files["tests/test_hello.py"] = `import unittest

from hellofleet_py import hello


class HelloTest(unittest.TestCase):
    def test_greets(self):
        self.assertEqual(hello("R"), "Hello, R!")

    def test_fails_on_purpose(self):
        self.assertEqual(hello(), "Hello, world!")
`
	f.do("POST", "/api/v1/sources", map[string]string{"name": "py", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/py/git-builders", map[string]any{"name": "tested", "url": "file://" + versionedRepoFrom(t, files),
		"check": true, "check_command": "python3 -m unittest discover -s tests"}, 201)
	b := f.mustSucceed(f.run("/api/v1/sources/py/git-builders/tested/run", nil))
	if c := b.Check; c == nil || c.Verdict != registry.CheckError || c.Gated || len(b.Artifacts) != 2 ||
		!strings.Contains(c.Summary, "exited with status 1: FAILED (failures=1)") {
		t.Fatalf("check = %+v, artifacts %d; want ERROR with one failure (the other test imported the package), published\n%s", c, len(b.Artifacts), f.log(b.ID))
	}
	if !hasPhase(b, registry.PhaseCheck) || !strings.Contains(f.log(b.ID), "==> check: python3 -m unittest discover -s tests") {
		t.Fatalf("the check's phase or log section is missing: %+v\n%s", b.Phases, f.log(b.ID))
	}
}

func checkRepo(t *testing.T, name string) string {
	t.Helper()
	return versionedRepoFrom(t, testenv.CopyTree(t, filepath.Join("testdata", "check", name)))
}

func hasPhase(b *registry.Build, phase string) bool {
	for _, p := range b.Phases {
		if p.Phase == phase {
			return true
		}
	}
	return false
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
