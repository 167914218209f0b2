package faulttest

import (
	"os"
	"path/filepath"
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

// TestAnOlderAOFRestoredUnderARunningFleetReusesNoIDAndNoToken: Redis
// loses every write after a point (an older AOF restored under the
// running API and worker: the worst a crash under everysec or a failover
// can do, and more). Builds acknowledged after that point are lost, but
// no id handed out before is given to another build, and no attempt
// token repeats: the build that was running at the snapshot runs again
// under a new token (with the old per-build counter it took the same one,
// and its artifacts' names collided with the first run's).
func TestAnOlderAOFRestoredUnderARunningFleetReusesNoIDAndNoToken(t *testing.T) {
	t.Parallel()
	f := setup(t, "PKGFLEET_RECONCILE_GRACE", "25s", "PKGFLEET_RECONCILE_INTERVAL", "2s")
	f.startFleet()
	// A new builder's head is built at once (by the poller); run returns
	// that build.
	f.builders(map[string]string{"a1": "0.1", "a2": "0.2"})

	named := map[int64]string{} // every id the API handed out → its builder
	tokens := map[int64]int64{} // every succeeded attempt's token → its build
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
		if other, ok := tokens[b.AttemptToken]; ok && other != id {
			t.Fatalf("token %d of build %d was build %d's", b.AttemptToken, id, other)
		}
		tokens[b.AttemptToken] = id
		return b
	}
	for _, n := range []string{"a1", "a2"} {
		succeeded(handOut(n))
	}
	f.addBuilder("x", "6.05")
	x := handOut("x")
	f.waitStatus(x, time.Minute, running, "to run")
	snap := f.snapshotAOF() // x runs under its first token

	xFirst := succeeded(x)
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
	// x ran again (asynq's recoverer found its task active with an old
	// lease), under a token it never had.
	xAgain := succeeded(x)
	if xAgain.AttemptToken == xFirst.AttemptToken {
		t.Fatalf("build %d ran again under its first token %d", x, xFirst.AttemptToken)
	}
	for _, id := range lost {
		if b := f.build(id); b != nil && b.Builder != named[id] {
			t.Fatalf("lost build id %d now names %s's build", id, b.Builder)
		}
	}
	t.Logf("ids lost in the restore %v, handed out after it %v; x's tokens %d then %d", lost, after, xFirst.AttemptToken, xAgain.AttemptToken)
}
