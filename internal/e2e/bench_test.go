package e2e

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestBenchRPackageAgainstRCMDBuild times the example R package through
// API → queue → worker → sandbox against `R CMD build` run directly. It
// runs only from scripts/bench.sh (PKGFLEET_BENCH=1).
func TestBenchRPackageAgainstRCMDBuild(t *testing.T) {
	if os.Getenv("PKGFLEET_BENCH") == "" {
		t.Skip("a benchmark: scripts/bench.sh runs it")
	}
	f := setup(t, nil)
	f.do("POST", "/api/v1/sources", map[string]string{"name": "r", "type": "git"}, 201)
	const runs = 3
	var fleet, direct time.Duration
	for i := range runs {
		repo := versionedRepo(t, "r/hellofleet", "DESCRIPTION")
		name := "hello" + string(rune('a'+i))
		f.do("POST", "/api/v1/sources/r/git-builders", map[string]any{"name": name, "url": "file://" + repo}, 201)
		start := time.Now()
		b := f.wait(f.run("/api/v1/sources/r/git-builders/"+name+"/run", nil).ID)
		fleet += time.Since(start)
		if b.Status != registry.StatusSucceeded {
			t.Fatalf("build: %s %s", b.Status, b.Detail)
		}
		out := t.TempDir()
		cmd := exec.Command("R", "CMD", "build", repo)
		cmd.Dir = out
		start = time.Now()
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("R CMD build: %v\n%s", err, o)
		}
		direct += time.Since(start)
	}
	testenv.Require(t, "R")
	t.Logf("BENCH r-package runs=%d pkgfleet=%s direct=%s ratio=%.2fx overhead=%s",
		runs, (fleet / runs).Round(time.Millisecond), (direct / runs).Round(time.Millisecond),
		fleet.Seconds()/direct.Seconds(), ((fleet - direct) / runs).Round(time.Millisecond))
}
