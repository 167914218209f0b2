package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/leader"
	"github.com/pkgfleet/pkgfleet/internal/metrics"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

// rig is a reconciler on a database of its own, with a clock the test
// moves, the API's real metrics and a log the test reads.
type rig struct {
	t       *testing.T
	rdb     *redis.Client
	reg     *registry.Registry
	enq     *queue.Enqueuer
	insp    *asynq.Inspector
	r       *Reconciler
	metrics *metrics.API
	log     *testenv.Capture

	mu  sync.Mutex
	now time.Time
}

const grace = time.Hour

func newRig(t *testing.T) *rig {
	t.Helper()
	rdb, _ := redisServer.DB(t)
	log, capture := testenv.CapturingLogger(t)
	x := &rig{t: t, rdb: rdb, reg: registry.New(rdb), insp: asynq.NewInspectorFromRedisClient(rdb), log: capture,
		now: time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC)}
	client := asynq.NewClientFromRedisClient(rdb)
	x.enq = &queue.Enqueuer{Registry: x.reg, Client: client, Inspector: x.insp, Timeout: time.Hour, MaxAttempts: 3, Redis: rdb, BuildConcurrency: 2}
	x.metrics = metrics.NewAPI(func() (metrics.FleetState, error) { return metrics.FleetState{}, nil }, time.Second)
	x.r = x.reconciler(log, "test")
	return x
}

func (x *rig) reconciler(log *slog.Logger, owner string) *Reconciler {
	return &Reconciler{Redis: x.rdb, Registry: x.reg, Enqueuer: x.enq, Inspector: x.insp, Log: log, Owner: owner,
		Interval: time.Second, Grace: grace, BuildConcurrency: 2, Repaired: x.metrics.Repairs(Kinds),
		Now: func() time.Time { x.mu.Lock(); defer x.mu.Unlock(); return x.now }}
}

func (x *rig) advance(d time.Duration) { x.mu.Lock(); x.now = x.now.Add(d); x.mu.Unlock() }

// pass runs one pass and checks how many it repaired.
func (x *rig) pass(want int, why string) {
	x.t.Helper()
	n, err := x.r.Pass(context.Background())
	if err != nil {
		x.t.Fatalf("pass (%s): %v", why, err)
	}
	if n != want {
		x.t.Fatalf("pass (%s) repaired %d, want %d", why, n, want)
	}
}

// repairedOnce runs the passes of one seeded inconsistency: seen first
// (nothing repaired: it may be work in flight), repaired once its grace
// passed, then never again; and checks its log line and metric.
func (x *rig) repairedOnce(kind string, n int) {
	x.t.Helper()
	x.pass(0, "first sight, within the grace period")
	x.advance(grace / 2)
	x.pass(0, "still within the grace period")
	x.advance(grace / 2)
	x.pass(n, "the grace period passed")
	x.advance(grace)
	x.pass(0, "after the repair")
	x.advance(grace)
	x.pass(0, "after the repair, once more")
	if got := strings.Count(x.log.String(), "kind="+kind); got != n {
		x.t.Fatalf("%d log lines of kind %s, want %d:\n%s", got, kind, n, x.log.String())
	}
	srv := httptest.NewServer(x.metrics.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		x.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("pkgfleet_reconciler_repairs_total{kind=%q} %d\n", kind, n); !strings.Contains(string(body), want) {
		x.t.Fatalf("metrics lack %q:\n%s", want, grepLines(string(body), "pkgfleet_reconciler"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func (x *rig) record(sha string) *registry.Build {
	x.t.Helper()
	b, _, err := x.reg.CreateBuild(context.Background(), &registry.Build{
		Source: "s", Builder: "b", Language: registry.LangPython, Ref: "main", SHA: sha, Trigger: "manual", MaxAttempts: 3}, registry.ReuseActive)
	if err != nil {
		x.t.Fatal(err)
	}
	return b
}

// enqueue records and queues a build as the API does.
func (x *rig) enqueue(sha string) *registry.Build {
	x.t.Helper()
	bl := &registry.Builder{Source: "s", Name: "b", Language: registry.LangPython}
	b, _, err := x.enq.Enqueue(context.Background(), testenv.Logger(x.t), queue.Request{Builder: bl, Ref: "main", SHA: sha, Trigger: "manual", Mode: registry.ReuseActive})
	if err != nil {
		x.t.Fatal(err)
	}
	return b
}

func (x *rig) task(b *registry.Build) *asynq.TaskInfo {
	x.t.Helper()
	info, err := x.insp.GetTaskInfo(queue.Queue(b.Language), queue.TaskID(b.Source, b.Builder, b.SHA))
	if err != nil {
		return nil
	}
	return info
}

func TestABuildWhoseTaskWasLostIsQueuedAgainOnce(t *testing.T) {
	t.Parallel()
	x := newRig(t)
	ctx := context.Background()
	// Queued as the API does: record and task. It is not suspect.
	ok := x.enqueue("ok")
	// Redis lost its task: the record says queued, no task runs it.
	lost := x.record("lost")
	// Running on a worker, then Redis lost the task (and its lease).
	running := x.record("running")
	if _, err := x.reg.UpdateBuild(ctx, running.ID, func(b *registry.Build) error { b.Status = registry.StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	// Its worker's retry found no lease: asynq took the task off the
	// active list, then gave up (hibiken/asynq#1051); its hash says
	// active, on no list.
	stranded := x.enqueue("stranded")
	q, id := queue.Queue(stranded.Language), queue.TaskID(stranded.Source, stranded.Builder, stranded.SHA)
	x.rdb.LRem(ctx, queue.PendingKey(q), 0, id)
	x.rdb.HSet(ctx, queue.TaskKey(q, id), "state", "active")

	x.repairedOnce(KindLostTask, 3)
	for _, b := range []*registry.Build{ok, lost, running, stranded} {
		info := x.task(b)
		if info == nil || info.State != asynq.TaskStatePending || payloadBuild(info.Payload) != b.ID {
			t.Fatalf("build %d's task: %+v, want pending with its id", b.ID, info)
		}
	}
	// Queued again means in its builder's line again, before any worker
	// sees it.
	if n, _ := x.rdb.ZCard(ctx, "pkgfleet:slots:{s/b}:queue").Result(); n != 4 {
		t.Fatalf("%d builds in the builder's line, want 4", n)
	}
}

func TestAGracePeriodProtectsABuildWhoseTaskIsBeingQueuedOrPicked(t *testing.T) {
	t.Parallel()
	x := newRig(t)
	// The record is written; its task is not yet (the API is between
	// CreateBuild and the enqueue) when a pass looks.
	b := x.record("in-flight")
	// Another was dequeued (active, leased) by a worker that has not begun
	// its attempt: its record still says queued, no token.
	picked := x.enqueue("picked")
	q, id := queue.Queue(picked.Language), queue.TaskID(picked.Source, picked.Builder, picked.SHA)
	x.dequeueWithoutLease(q, id)
	x.rdb.ZAdd(context.Background(), queue.LeaseKey(q), redis.Z{Score: float64(time.Now().Add(time.Hour).Unix()), Member: id})
	x.pass(0, "the task is being written")
	x.advance(grace - time.Second)
	x.pass(0, "the task is being written, still")
	if err := x.enq.Requeue(context.Background(), b); err != nil { // the API's enqueue lands
		t.Fatal(err)
	}
	x.advance(grace)
	x.pass(0, "the task arrived within the grace period")
	if strings.Contains(x.log.String(), "reconciler repaired") {
		t.Fatalf("a repair of work in flight:\n%s", x.log.String())
	}
}

// dequeueWithoutLease does what asynq's dequeue does, less the lease: the
// state a failover leaves when it lost the lease's write (#1051, #1144).
func (x *rig) dequeueWithoutLease(q, id string) {
	x.t.Helper()
	ctx := context.Background()
	if n, err := x.rdb.LRem(ctx, queue.PendingKey(q), 0, id).Result(); err != nil || n != 1 {
		x.t.Fatalf("take %s off pending: %d %v", id, n, err)
	}
	x.rdb.LPush(ctx, queue.ActiveKey(q), id)
	x.rdb.HSet(ctx, queue.TaskKey(q, id), "state", "active")
}

func TestAnActiveTaskWithNoLeaseGoesBackToPendingOnce(t *testing.T) {
	t.Parallel()
	x := newRig(t)
	ctx := context.Background()
	var builds []*registry.Build
	for _, sha := range []string{"unleased", "leased", "expired"} {
		builds = append(builds, x.enqueue(sha))
	}
	q := queue.Queue(registry.LangPython)
	id := func(b *registry.Build) string { return queue.TaskID(b.Source, b.Builder, b.SHA) }
	for _, b := range builds {
		x.dequeueWithoutLease(q, id(b))
	}
	// One runs on a live worker (a lease ahead), one on a dead one (a
	// lease that expired: asynq's recoverer's, not the reconciler's).
	x.rdb.ZAdd(ctx, queue.LeaseKey(q), redis.Z{Score: float64(time.Now().Add(time.Hour).Unix()), Member: id(builds[1])})
	x.rdb.ZAdd(ctx, queue.LeaseKey(q), redis.Z{Score: float64(time.Now().Add(-time.Hour).Unix()), Member: id(builds[2])})

	x.repairedOnce(KindUnleasedTask, 1)
	for i, want := range []asynq.TaskState{asynq.TaskStatePending, asynq.TaskStateActive, asynq.TaskStateActive} {
		if info := x.task(builds[i]); info == nil || info.State != want {
			t.Fatalf("task of build %d: %+v, want %s", builds[i].ID, info, want)
		}
	}
	if n, _ := x.rdb.LLen(ctx, queue.ActiveKey(q)).Result(); n != 2 {
		t.Fatalf("%d active tasks, want the 2 leased ones", n)
	}
}

func TestASlotHeldByASupersededAttemptIsFreedOnce(t *testing.T) {
	t.Parallel()
	x := newRig(t)
	ctx := context.Background()
	stale, current := x.enqueue("stale"), x.enqueue("current")
	_, _, old, err := x.reg.BeginAttempt(ctx, stale.ID, 1, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := x.reg.BeginAttempt(ctx, stale.ID, 2, "w2"); err != nil {
		t.Fatal(err)
	}
	_, _, cur, err := x.reg.BeginAttempt(ctx, current.ID, 1, "w1")
	if err != nil {
		t.Fatal(err)
	}
	// Both hold a slot whose lease reaches far ahead (a restored store, a
	// clock that jumped): the superseded attempt's would outlast its worker.
	until := float64(time.Now().Add(time.Hour).UnixMilli())
	holder := func(a registry.Attempt) string { return fmt.Sprintf("%d:%d", a.Build, a.Token) }
	x.rdb.ZAdd(ctx, "pkgfleet:slots:{s/b}:held", redis.Z{Score: until, Member: holder(old)}, redis.Z{Score: until, Member: holder(cur)})

	x.repairedOnce(KindStaleSlot, 1)
	held, err := semaphore.New(x.rdb).Holders(ctx, queue.SlotKey("s", "b"))
	if err != nil || len(held) != 1 || held[0] != holder(cur) {
		t.Fatalf("holders %v (%v), want only the current attempt %s", held, err, holder(cur))
	}
}

func TestATaskWhoseBuildRecordIsGoneIsDeletedOnce(t *testing.T) {
	t.Parallel()
	x := newRig(t)
	q := queue.Queue(registry.LangPython)
	kept := x.enqueue("kept")
	// The write that recorded build 4242 was lost; its task was not.
	payload, _ := json.Marshal(queue.Payload{BuildID: 4242})
	if _, err := x.enq.Client.Enqueue(asynq.NewTask(queue.TypeBuild, payload, asynq.Queue(q), asynq.TaskID("task-4242"))); err != nil {
		t.Fatal(err)
	}
	x.repairedOnce(KindOrphanTask, 1)
	if _, err := x.insp.GetTaskInfo(q, "task-4242"); err == nil {
		t.Fatal("the orphan task is still there")
	}
	if x.task(kept) == nil {
		t.Fatal("the task of a recorded build was deleted")
	}
}

func TestOnlyTheLeaderReconciles(t *testing.T) {
	t.Parallel()
	x := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	payload, _ := json.Marshal(queue.Payload{BuildID: 777})
	q := queue.Queue(registry.LangPython)
	if _, err := x.enq.Client.Enqueue(asynq.NewTask(queue.TypeBuild, payload, asynq.Queue(q), asynq.TaskID("orphan"))); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var logs []*testenv.Capture
	for i := range 3 {
		log, capture := testenv.CapturingLogger(t)
		logs = append(logs, capture)
		r := x.reconciler(log, fmt.Sprint("replica-", i))
		r.Grace, r.Interval = 0, 100*time.Millisecond
		r.Lease = func(e *leader.Elector) { e.TTL = time.Second }
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(ctx) }()
	}
	testenv.Eventually(t, 20*time.Second, "the orphan task to be deleted", func() bool {
		_, err := x.insp.GetTaskInfo(q, "orphan")
		return err != nil
	})
	// A second orphan, later: the same leader, still one repair each.
	if _, err := x.enq.Client.Enqueue(asynq.NewTask(queue.TypeBuild, payload, asynq.Queue(q), asynq.TaskID("orphan-2"))); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the second orphan task to be deleted", func() bool {
		_, err := x.insp.GetTaskInfo(q, "orphan-2")
		return err != nil
	})
	cancel()
	wg.Wait()
	active, repairs := 0, 0
	for _, c := range logs {
		if strings.Contains(c.String(), "reconciler active") {
			active++
		}
		repairs += strings.Count(c.String(), "reconciler repaired")
	}
	if active != 1 || repairs != 2 {
		t.Fatalf("%d replicas led and %d repairs were logged, want 1 and 2", active, repairs)
	}
}
