package faulttest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// snapshotAOF copies Redis's AOF directory as it is now.
func (f *fleet) snapshotAOF() map[string]string {
	f.t.Helper()
	return testenv.CopyTree(f.t, filepath.Join(f.dir, "redis", "appendonlydir"))
}

// restoreAOF replaces Redis's AOF directory by snap; Redis must be down.
func (f *fleet) restoreAOF(snap map[string]string) {
	f.t.Helper()
	dir := filepath.Join(f.dir, "redis", "appendonlydir")
	if err := os.RemoveAll(dir); err != nil {
		f.t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	for name, data := range snap {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
}

// attemptTokens lists the tokens of build id's attempts, from the header
// each attempt writes in its log.
func (f *fleet) attemptTokens(id int64) []int64 {
	f.t.Helper()
	log := f.buildLog(id)
	var out []int64
	for _, m := range attemptHeader.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		out = append(out, n)
	}
	return out
}

var attemptHeader = regexp.MustCompile(`==> pkgfleet build \d+, attempt \d+ of \d+ \(token (\d+)\)`)

// TestAnOlderAOFRestoredUnderARunningFleetReusesNoIDAndNoToken: Redis
// loses every write after a point (an older AOF restored under the
// running API and worker: the worst a crash under everysec or a failover
// can do, and more). Builds acknowledged after that point are lost, but
// no id handed out before is given to another build, and no attempt
// token repeats: the builds queued or running at the snapshot run again,
// each under a new token.
func TestAnOlderAOFRestoredUnderARunningFleetReusesNoIDAndNoToken(t *testing.T) {
	t.Parallel()
	f := setup(t, "PKGFLEET_WORKER_FENCEAFTER", "4s", "PKGFLEET_RECONCILE_GRACE", "35s", "PKGFLEET_RECONCILE_INTERVAL", "2s")
	f.startFleet()
	// A new builder's head is built at once (by the poller); run returns
	// that build.
	f.builders(map[string]string{"a1": "0.1", "a2": "0.2"})

	named := map[int64]string{} // every id the API handed out → its builder
	handOut := func(name string) int64 {
		id := f.run(name)
		if prev, ok := named[id]; ok && prev != name {
			t.Fatalf("build id %d names %s's build, and named %s's before", id, name, prev)
		}
		named[id] = name
		return id
	}
	succeeded := func(id int64) *registry.Build {
		b := f.waitDone(id)
		if b.Status != registry.StatusSucceeded {
			t.Fatalf("build %d (%s): %s: %s", id, b.Builder, b.Status, b.Detail)
		}
		if b.Builder != named[id] {
			t.Fatalf("build %d is %s's, the API handed it out for %s", id, b.Builder, named[id])
		}
		return b
	}
	for _, n := range []string{"a1", "a2"} {
		succeeded(handOut(n))
	}
	// Both worker slots busy, so x waits in its queue, no attempt begun,
	// when Redis's state is saved.
	var busy []int64
	for _, n := range []string{"y1", "y2"} {
		f.addBuilder(n, "6.0"+n[1:])
		busy = append(busy, handOut(n))
	}
	for _, id := range busy {
		f.waitStatus(id, time.Minute, running, "to run")
	}
	f.addBuilder("x", "0.5")
	x := handOut("x")
	if b := f.build(x); b == nil || b.Status != registry.StatusQueued || b.AttemptToken != 0 {
		t.Fatalf("build %d is not queued before any attempt: %+v", x, b)
	}
	atSnap := map[int64][]int64{} // build → its attempts' tokens in the saved state
	for _, id := range append([]int64{x}, busy...) {
		atSnap[id] = f.attemptTokens(id)
	}
	snap := f.snapshotAOF()

	first := map[int64][]int64{} // build → the tokens of its attempts
	for _, id := range append([]int64{x}, busy...) {
		succeeded(id)
		first[id] = f.attemptTokens(id)
	}
	var lost []int64
	for _, n := range []string{"a3", "a4"} {
		f.addBuilder(n, "0.3")
		lost = append(lost, handOut(n))
	}
	for _, id := range lost {
		succeeded(id)
	}

	f.stopRedis(syscall.SIGKILL)
	f.restoreAOF(snap)
	f.startRedis()
	testenv.Eventually(t, 30*time.Second, "the API to be ready again", f.ready)

	// a3 and a4 are lost, builders and builds; other builders' builds
	// never get their ids.
	var after []int64
	for _, n := range []string{"b3", "b4", "b5"} {
		f.addBuilder(n, "0.3")
		after = append(after, handOut(n))
	}
	for _, id := range after {
		succeeded(id)
	}
	// x runs again from its queue, and y1 and y2 again once asynq's
	// recoverer finds their tasks active with old leases: each under a
	// token it never had (a per-build counter gave x its first token
	// again, and its files' names collided with the first run's).
	for id, before := range first {
		succeeded(id)
		// The log went back to the saved state too: its attempts then,
		// the lost ones, and the ones after the restore.
		saved := len(atSnap[id])
		lostAttempts, again := before[saved:], f.attemptTokens(id)[saved:]
		if len(again) == 0 {
			t.Fatalf("build %d: tokens %v at the save, %v before the restore, %v after: it ran again, so its log names a new attempt", id, atSnap[id], before, again)
		}
		for _, tok := range again {
			if slices.Contains(before, tok) {
				t.Fatalf("build %d took token %d again after the restore (tokens before %v, after %v)", id, tok, before, again)
			}
		}
		t.Logf("build %d (%s): tokens %v at the save, then %v (lost), then %v after the restore", id, named[id], atSnap[id], lostAttempts, again)
	}
	for _, id := range lost {
		if b := f.build(id); b != nil && b.Builder != named[id] {
			t.Fatalf("lost build id %d now names %s's build", id, b.Builder)
		}
	}
	t.Logf("ids lost in the restore %v, handed out after it %v", lost, after)
}
