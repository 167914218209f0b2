package fleettest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// pushes is how many one-at-a-time builds TestPushToBuildProcessStart
// times: PKGFLEET_PUSHES (scripts/bench.sh), or a few in `go test`.
func pushes() int {
	if n, err := strconv.Atoi(os.Getenv("PKGFLEET_PUSHES")); err == nil && n > 0 {
		return n
	}
	return 5
}

// TestPushToBuildProcessStart times, on an idle fleet (one worker, the
// worker's default task-check interval), `run` of a commit through the API
// to the start of the build's process, one push at a time; it splits the
// time at the record's started_at (the worker took the task) and reports
// p50/p99 of each. It asserts that every push ran its own build.
func TestPushToBuildProcessStart(t *testing.T) {
	n := pushes()
	f := setup(t, 1)
	sha := f.builder("push", registry.TriggerTags, 1)[0]
	starts := filepath.Join(f.dir, "starts")
	f.recipe.command.Store("date +%s%N >> " + starts)
	f.worker("idle", 1)
	var total, pickup, launch []time.Duration
	var last int64
	for i := range n {
		t0 := time.Now()
		id := f.rerun("push", sha)
		if id == last {
			t.Fatalf("push %d did not make a new build", i)
		}
		last = id
		b := f.waitStatus(id, registry.StatusSucceeded)
		raw, err := os.ReadFile(starts)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Fields(string(raw))
		if len(lines) != i+1 {
			t.Fatalf("after %d pushes the build process started %d times", i+1, len(lines))
		}
		ns, err := strconv.ParseInt(lines[i], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		started := time.Unix(0, ns)
		total = append(total, started.Sub(t0))
		pickup = append(pickup, b.StartedAt.Sub(t0))
		launch = append(launch, started.Sub(*b.StartedAt))
	}
	q := func(d []time.Duration, p float64) string {
		slices.Sort(d)
		return fmt.Sprint(d[min(len(d)-1, int(p*float64(len(d))))].Round(100 * time.Microsecond))
	}
	t.Logf("BENCH push->build process start pushes=%d p50=%s p99=%s | push->worker took it (record started_at) p50=%s p99=%s | started_at->process (clone, launch) p50=%s p99=%s",
		n, q(total, 0.5), q(total, 0.99), q(pickup, 0.5), q(pickup, 0.99), q(launch, 0.5), q(launch, 0.99))
}
