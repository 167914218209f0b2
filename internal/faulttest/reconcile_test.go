package faulttest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestTheReconcilerRepairsALostTaskAndAnUnleasedOneOnARunningFleet: a
// queued build whose task Redis lost is queued again by the API's
// reconciler and built, once; a running build whose task lost its lease
// is stopped by its worker, and queued again by the reconciler only after.
func TestTheReconcilerRepairsALostTaskAndAnUnleasedOneOnARunningFleet(t *testing.T) {
	t.Parallel()
	f := setup(t, "PKGFLEET_WORKER_FENCEAFTER", "4s", "PKGFLEET_RECONCILE_GRACE", "35s", "PKGFLEET_RECONCILE_INTERVAL", "1s")
	apiProc, w := f.startFleet()
	ctx := context.Background()
	f.builders(map[string]string{"y1": "5.01", "y2": "5.02"})
	busy := []int64{f.run("y1"), f.run("y2")}
	for _, id := range busy {
		f.waitStatus(id, time.Minute, running, "to run")
	}
	// Both worker slots are busy: x waits in its queue when Redis loses
	// its task (the enqueue's write).
	f.addBuilder("x", "0.5")
	x := f.build(f.run("x"))
	if x.Status != registry.StatusQueued {
		t.Fatalf("build %d is %s, want queued behind the busy slots", x.ID, x.Status)
	}
	q, task := queue.Queue(x.Language), queue.TaskID(x.Source, x.Builder, x.SHA)
	if n, err := f.rdb.LRem(ctx, queue.PendingKey(q), 0, task).Result(); err != nil || n != 1 {
		t.Fatalf("take task %s off the pending list: %d %v", task, n, err)
	}
	f.rdb.Del(ctx, queue.TaskKey(q, task))

	if b := f.waitDone(x.ID); b.Status != registry.StatusSucceeded {
		t.Fatalf("build %d: %s: %s", x.ID, b.Status, b.Detail)
	}
	for _, id := range busy {
		f.waitDone(id)
	}
	if !apiProc.logged("kind=lost_task") || strings.Count(apiProc.text(), "reconciler repaired") != 1 {
		t.Fatalf("the API's log has not one repair, of kind lost_task:\n%s", tail(apiProc.text(), 4000))
	}

	// A running build's task loses its lease (a failover lost the
	// dequeue's write) while its worker lives: the worker stops its copy
	// within T and returns, and asynq's retry takes the task off the
	// active list, then fails for want of the lease (hibiken/asynq#1051):
	// the task is on no list, run by no one, until the reconciler, after
	// its grace, queues the build again.
	f.addBuilder("z", "3.03")
	z := f.waitStatus(f.run("z"), time.Minute, running, "to run")
	zq, ztask := queue.Queue(z.Language), queue.TaskID(z.Source, z.Builder, z.SHA)
	if n, err := f.rdb.ZRem(ctx, queue.LeaseKey(zq), ztask).Result(); err != nil || n != 1 {
		t.Fatalf("remove the lease of task %s: %d %v", ztask, n, err)
	}
	testenv.Eventually(t, 2*time.Minute, "the reconciler to queue the stranded build again", func() bool {
		return apiProc.logged(`task_state="active, on no list"`)
	})
	if !w.logged("build stopped: its hold was lost") {
		t.Fatalf("the build was queued again before its worker stopped its copy:\n%s", tail(w.text(), 4000))
	}
	// Queued again, it counts its attempts afresh (asynq's retry count is
	// the task's); its token is new.
	if b := f.waitDone(z.ID); b.Status != registry.StatusSucceeded || b.AttemptToken <= z.AttemptToken {
		t.Fatalf("build %d: %s under token %d (it ran under %d): want succeeded under a new one", z.ID, b.Status, b.AttemptToken, z.AttemptToken)
	}
	if n := strings.Count(apiProc.text(), "reconciler repaired"); n != 2 {
		t.Fatalf("%d repairs logged, want 2 (the lost task, the stranded one):\n%s", n, tail(apiProc.text(), 4000))
	}
}

// text is what p logged so far.
func (p *proc) text() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}
