package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/buildlog"
	"github.com/pkgfleet/pkgfleet/internal/notify"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/recipe"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

// bundle is what a pipeline test works with: a pipeline built by New on
// its own Redis database, a builder of a one-commit repository, and the
// recipe the pipeline runs for R (the test's).
type bundle struct {
	t        *testing.T
	p        *Pipeline
	reg      *registry.Registry
	rdb      *redis.Client
	hub      *notify.Hub
	stopping chan struct{}
	builder  *registry.Builder
	sha      string
	// build is the recipe: it gets each attempt's input.
	build func(ctx context.Context, in recipe.Input) (*recipe.Output, error)
}

// funcRecipe is a recipe that calls the bundle's build func.
type funcRecipe struct{ b *bundle }

func (r funcRecipe) Build(ctx context.Context, in recipe.Input) (*recipe.Output, error) {
	return r.b.build(ctx, in)
}

// setup builds a pipeline as a worker does; its builder builds commits
// (one slot) unless trigger says tags. The recipe succeeds until a test
// sets another.
func setup(t *testing.T, trigger string) *bundle {
	t.Helper()
	return setupWith(t, trigger, nil)
}

// setupWith is setup with Deps that tune changes.
func setupWith(t *testing.T, trigger string, tune func(*Deps)) *bundle {
	t.Helper()
	t.Parallel()
	testenv.Require(t, "git")
	rdb, db := redisServer.DB(t)
	cfg := testenv.Config(t, redisServer.Settings(t.TempDir(), db))
	log := testenv.Logger(t)
	hub := notify.New(rdb, log, semaphore.WakeChannel, queue.CancelChannel)
	t.Cleanup(func() { hub.Close() })
	b := &bundle{t: t, reg: registry.New(rdb), rdb: rdb, hub: hub, stopping: make(chan struct{}), build: succeed}
	d := Deps{
		Config: cfg, Redis: rdb, Events: hub, Worker: "w1", Log: log, Stopping: b.stopping,
		Languages: NewLanguages(map[string]Language{registry.LangR: {Recipe: funcRecipe{b}, Sandbox: "unsandboxed", Tier: "unsandboxed"}}),
		Slots: func(s *semaphore.Semaphore) {
			s.CheckEvery = 50 * time.Millisecond
		},
	}
	if tune != nil {
		tune(&d)
	}
	p, err := New(d)
	if err != nil {
		t.Fatal(err)
	}
	b.p = p

	repo, _ := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: p\nVersion: 1.0\n"})
	b.sha = testenv.Commit(t, repo, map[string]string{"DESCRIPTION": "Package: p\nVersion: 1.1\n"}, "v1.1")
	ctx := context.Background()
	if _, err := b.reg.CreateSource(ctx, registry.Source{Name: "src", Type: registry.TypeGit}); err != nil {
		t.Fatal(err)
	}
	b.builder = &registry.Builder{Source: "src", Name: "p", URL: "file://" + repo, BuildTrigger: trigger, CloneDepth: 1}
	if err := (registry.Policy{URLs: p.git.Policy}).ValidateBuilder(b.builder); err != nil {
		t.Fatal(err)
	}
	if err := b.reg.CreateBuilder(ctx, b.builder); err != nil {
		t.Fatal(err)
	}
	return b
}

// succeed is a recipe that "builds" p 1.1 into one source tarball.
func succeed(_ context.Context, in recipe.Input) (*recipe.Output, error) {
	file := filepath.Join(in.Dest, "p_1.1.tar.gz")
	if err := os.WriteFile(file, []byte("tarball"), 0o644); err != nil {
		return nil, err
	}
	return &recipe.Output{Package: "p", Version: "1.1", Artifacts: []registry.Artifact{{File: filepath.Base(file), Kind: "source"}}}, nil
}

// blocked is a recipe that says it started on started and runs until its
// context ends.
func blocked(started chan<- struct{}) func(context.Context, recipe.Input) (*recipe.Output, error) {
	return func(ctx context.Context, _ recipe.Input) (*recipe.Output, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}
}

// queued records a build of the builder's commit that may take attempts
// attempts, as queue.Enqueuer does.
func (b *bundle) queued(attempts int) int64 {
	b.t.Helper()
	out, _, err := b.reg.CreateBuild(context.Background(), &registry.Build{
		Source: "src", Builder: b.builder.Name, Language: registry.LangR, Ref: "main", SHA: b.sha,
		Trigger: "manual", MaxAttempts: attempts,
	}, registry.ReuseActive)
	if err != nil {
		b.t.Fatal(err)
	}
	return out.ID
}

// get reads build id.
func (b *bundle) get(id int64) *registry.Build {
	b.t.Helper()
	out, err := b.reg.Build(context.Background(), id)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// log reads build id's log, in Redis or, once it finished, in the store.
func (b *bundle) log(id int64) string {
	b.t.Helper()
	logs := &buildlog.Logs{Registry: b.reg, Store: b.p.store}
	out, err := logs.Read(context.Background(), b.get(id), 0)
	if err != nil {
		b.t.Fatal(err)
	}
	return string(out)
}

// start runs attempt of attempts of build id in the background, as asynq
// would; the returned channel yields what it returns to asynq.
func (b *bundle) start(ctx context.Context, id int64, attempt, attempts int) <-chan error {
	done := make(chan error, 1)
	go func() { done <- b.p.process(ctx, id, attempt, attempts) }()
	return done
}

// wait returns what a started attempt returned, failing after a minute.
func (b *bundle) wait(done <-chan error) error {
	b.t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		b.t.Fatal("the attempt did not return within a minute")
		return nil
	}
}

func received(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(time.Minute):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestASucceededBuildRecordsItsStoredArtifacts(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	id := b.queued(2)
	if err := b.p.process(context.Background(), id, 1, 2); err != nil {
		t.Fatalf("a succeeded attempt returned %v to asynq, want nil", err)
	}
	got := b.get(id)
	if got.Status != registry.StatusSucceeded || got.Package != "p" || got.Version != "1.1" || got.Attempts != 1 || got.Worker != "w1" || got.FinishedAt == nil {
		t.Fatalf("build = %+v, want succeeded p 1.1 after 1 attempt on w1", got)
	}
	if len(got.Artifacts) != 1 || got.Artifacts[0].File != "p_1.1.tar.gz" || got.Artifacts[0].Size != int64(len("tarball")) {
		t.Fatalf("artifacts = %+v, want the one tarball", got.Artifacts)
	}
	f, err := b.p.store.Open(context.Background(), "src", "p", id, got.AttemptToken, "p_1.1.tar.gz")
	if err != nil {
		t.Fatalf("the artifact is not in the store: %v", err)
	}
	f.Close()
	// The header (written with the record's start), the build's output
	// and the end (written with the record's end), in that order.
	l := b.log(id)
	header, clone, end := strings.Index(l, "==> pkgfleet build"), strings.Index(l, "==> cloning"), strings.Index(l, "==> succeeded: p 1.1")
	if header != 0 || clone < header || end < clone {
		t.Fatalf("log lacks its header, the clone or the end, or has them out of order:\n%s", l)
	}
	b.logMoved(id, l)
}

// logMoved checks that finished build id's log, text, left Redis for the
// store.
func (b *bundle) logMoved(id int64, text string) {
	b.t.Helper()
	if live, err := b.reg.Log(context.Background(), id, 0); err != nil || len(live) > 0 {
		b.t.Fatalf("Redis still holds %d bytes of the finished build's log (%v)", len(live), err)
	}
	if l := b.get(id).Log; l == nil || l.Size != int64(len(text)) {
		b.t.Fatalf("the record names the stored log %+v, want one of %d bytes", l, len(text))
	}
}

func TestALogPastItsCapIsCutAndStillLeavesRedis(t *testing.T) {
	// The log is stored with the build's end only below the cap; past
	// it, the registry's append cuts it and the log is moved after.
	b := setupWith(t, registry.TriggerCommits, func(d *Deps) { d.Config.Git.BuildLogSize = 600 })
	b.build = func(ctx context.Context, in recipe.Input) (*recipe.Output, error) {
		fmt.Fprint(in.Log, strings.Repeat("noisy output\n", 100))
		return succeed(ctx, in)
	}
	id := b.queued(1)
	if err := b.p.process(context.Background(), id, 1, 1); err != nil {
		t.Fatal(err)
	}
	if got := b.get(id); got.Status != registry.StatusSucceeded {
		t.Fatalf("build = %+v", got)
	}
	l := b.log(id)
	if !strings.Contains(l, "log truncated here") || strings.Contains(l, "==> succeeded") || len(l) != 600+len(fmt.Sprintf(registry.TruncationMark, "600B")) {
		t.Fatalf("a %d-byte log past a 600-byte cap:\n%s", len(l), l)
	}
	b.logMoved(id, l)
}

func TestAFailedAttemptIsRetriedUntilTheLastOne(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	calls := 0
	b.build = func(context.Context, recipe.Input) (*recipe.Output, error) {
		calls++
		return nil, &recipe.Failure{Reason: "R CMD build exited with status 1"}
	}
	id := b.queued(2)
	// asynq counts one spare retry (queue.spareRetry); the record's
	// MaxAttempts decides.
	err := b.p.process(context.Background(), id, 1, 3)
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("attempt 1 of 2 returned %v, want an error asynq retries", err)
	}
	if got := b.get(id); got.Status != registry.StatusQueued || got.Detail != "attempt 1 of 2 failed, will retry: R CMD build exited with status 1" {
		t.Fatalf("after attempt 1: %s %q, want queued for a retry", got.Status, got.Detail)
	}
	err = b.p.process(context.Background(), id, 2, 3)
	if !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("the last attempt returned %v, want SkipRetry (asynq must not spend the spare retry)", err)
	}
	got := b.get(id)
	if got.Status != registry.StatusFailed || got.Detail != "R CMD build exited with status 1" || got.FinishedAt == nil || got.Attempts != 2 {
		t.Fatalf("after attempt 2: %+v, want failed with the reason", got)
	}
	if calls != 2 {
		t.Fatalf("the recipe ran %d times, want 2", calls)
	}
	l := b.log(id)
	if strings.Count(l, "==> failed: ") != 2 {
		t.Fatalf("the failed build's log lacks its attempts' ends:\n%s", l)
	}
	b.logMoved(id, l)
}

func TestAPermanentFailureIsNotRetried(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	b.build = func(context.Context, recipe.Input) (*recipe.Output, error) {
		return nil, fmt.Errorf("the checkout has no DESCRIPTION: %w", asynq.SkipRetry)
	}
	id := b.queued(3)
	if err := b.p.process(context.Background(), id, 1, 3); !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("a permanent failure returned %v, want SkipRetry", err)
	}
	if got := b.get(id); got.Status != registry.StatusFailed || got.Detail != "the checkout has no DESCRIPTION" {
		t.Fatalf("build = %s %q, want failed after one attempt, without asynq's suffix", got.Status, got.Detail)
	}
}

func TestABuildWhoseBuilderWasDeletedFailsWithoutRunning(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	ran := false
	b.build = func(ctx context.Context, in recipe.Input) (*recipe.Output, error) {
		ran = true
		return succeed(ctx, in)
	}
	id := b.queued(3)
	if err := b.reg.DeleteBuilder(context.Background(), "src", b.builder.Name); err != nil {
		t.Fatal(err)
	}
	if err := b.p.process(context.Background(), id, 1, 3); !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("returned %v, want SkipRetry: retrying cannot help", err)
	}
	if ran {
		t.Fatal("the recipe ran for a deleted builder")
	}
	if got := b.get(id); got.Status != registry.StatusFailed || !strings.Contains(got.Detail, "not found") {
		t.Fatalf("build = %s %q, want failed: builder not found", got.Status, got.Detail)
	}
}

func TestACanceledBuildStopsAndIsNotRetried(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	started := make(chan struct{})
	b.build = blocked(started)
	id := b.queued(3)
	done := b.start(context.Background(), id, 1, 3)
	received(t, started, "the build to start")
	// What the API's cancel does: mark it, then announce it.
	if _, err := b.reg.UpdateBuild(context.Background(), id, func(x *registry.Build) error {
		x.Status = registry.StatusCanceled
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b.rdb.Publish(context.Background(), queue.CancelChannel, strconv.FormatInt(id, 10))
	if err := b.wait(done); err != nil {
		t.Fatalf("a canceled build returned %v, want nil (no retry)", err)
	}
	if got := b.get(id); got.Status != registry.StatusCanceled {
		t.Fatalf("build = %s %q, want it to stay canceled", got.Status, got.Detail)
	}
	if l := b.log(id); !strings.Contains(l, "==> canceled") {
		t.Fatalf("log does not say canceled:\n%s", l)
	}
}

func TestShutdownRequeuesEvenTheLastAttempt(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	started := make(chan struct{})
	b.build = blocked(started)
	id := b.queued(1)
	ctx, graceOver := context.WithCancel(context.Background())
	done := b.start(ctx, id, 1, 1)
	received(t, started, "the build to start")
	close(b.stopping) // the worker stops...
	graceOver()       // ...and asynq cancels the task when the grace period ends
	err := b.wait(done)
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("an interrupted last attempt returned %v, want an error asynq requeues", err)
	}
	if got := b.get(id); got.Status != registry.StatusQueued || got.Detail != "interrupted on worker w1; requeued" {
		t.Fatalf("build = %s %q, want queued again", got.Status, got.Detail)
	}
}

// With Sentinel an attempt builds only once a replica holds its begin and
// its slot (docs/fleet.md's durability contract): on this Redis, which has
// no replica, WAIT finds none, so the attempt never builds, gives its slot
// back, and returns an error asynq retries.
func TestAnAttemptNoReplicaHoldsDoesNotBuild(t *testing.T) {
	b := setupWith(t, registry.TriggerCommits, func(d *Deps) {
		d.Durability = redisconn.Durability{Replicas: 1, Timeout: 100 * time.Millisecond}
	})
	built := false
	b.build = func(ctx context.Context, in recipe.Input) (*recipe.Output, error) {
		built = true
		return succeed(ctx, in)
	}
	id := b.queued(2)
	ctx := context.Background()
	err := b.p.process(ctx, id, 1, 2)
	if !errors.Is(err, redisconn.ErrNotDurable) || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("process = %v, want ErrNotDurable, retried", err)
	}
	if built {
		t.Fatal("the attempt built although no replica held its begin")
	}
	if h, err := semaphore.New(b.rdb).Holders(ctx, queue.SlotKey("src", b.builder.Name)); err != nil || len(h) != 0 {
		t.Fatalf("slot holders after the refused attempt: %v %v", h, err)
	}
}

// takeSlot takes builder's only slot for another build (one that is not
// in line: order 0), held for the slot's whole lease.
func takeSlot(t *testing.T, rdb redis.UniversalClient, builder string) *semaphore.Lease {
	t.Helper()
	l, _, err := semaphore.New(rdb).TryAcquire(context.Background(), queue.SlotKey("src", builder), 1,
		semaphore.Ask{Waiter: "other", Holder: "other", PlaceFor: time.Minute})
	if err != nil || l == nil {
		t.Fatalf("take the slot of %s: %v %v", builder, l, err)
	}
	return l
}

func TestABuildWithARetryLeftParksForItsBuildersSlot(t *testing.T) {
	b := setup(t, registry.TriggerCommits) // a commit builder: one slot
	ctx := context.Background()
	takeSlot(t, b.rdb, b.builder.Name)
	id := b.queued(2)
	var parked *parkedError
	if err := b.p.process(ctx, id, 1, 2); !errors.As(err, &parked) {
		t.Fatalf("returned %v, want a *parkedError (back to asynq, keeping its place)", err)
	}
	got := b.get(id)
	if got.Status != registry.StatusWaiting || got.Detail != "waiting for a build slot (1 of 1 in use; 1st in line)" || got.WaitingSince == nil || got.Worker != "" {
		t.Fatalf("build = %+v, want waiting, 1st in line, on no worker", got)
	}
}

func TestABuildWaitsForItsBuildersSlotAndShowsItsPlace(t *testing.T) {
	b := setup(t, registry.TriggerCommits) // a commit builder: one slot
	ctx := context.Background()
	other := takeSlot(t, b.rdb, b.builder.Name)
	id := b.queued(2)
	// The last attempt asynq counts has no retry to park on: it waits here.
	done := b.start(ctx, id, 2, 2)
	testenv.Eventually(t, time.Minute, "the build to wait", func() bool {
		got := b.get(id)
		return got.Status == registry.StatusWaiting && got.Detail == "waiting for a build slot (1 of 1 in use; 1st in line)"
	})
	if _, err := other.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.wait(done); err != nil {
		t.Fatalf("returned %v once the slot was free, want nil", err)
	}
	if got := b.get(id); got.Status != registry.StatusSucceeded {
		t.Fatalf("build = %s %q, want succeeded", got.Status, got.Detail)
	}
}

func TestAWaitingBuildIsRequeuedWhenTheWorkerStops(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	ctx := context.Background()
	takeSlot(t, b.rdb, b.builder.Name)
	id := b.queued(2)
	taskCtx, graceOver := context.WithCancel(ctx)
	done := b.start(taskCtx, id, 2, 2)
	testenv.Eventually(t, time.Minute, "the build to wait", func() bool { return b.get(id).Status == registry.StatusWaiting })
	close(b.stopping) // the worker stops...
	graceOver()       // ...and asynq cancels the task when the grace period ends
	if err := b.wait(done); err == nil || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("returned %v, want an error asynq requeues", err)
	}
	if got := b.get(id); got.Status != registry.StatusQueued || got.Attempts != 0 || got.Detail != "interrupted on worker w1 while waiting for a build slot; requeued" {
		t.Fatalf("build = %s (attempts %d) %q, want queued", got.Status, got.Attempts, got.Detail)
	}
}

func TestACanceledWaitingBuildLeavesTheLine(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	ctx := context.Background()
	takeSlot(t, b.rdb, b.builder.Name)
	id := b.queued(2)
	done := b.start(ctx, id, 2, 2)
	testenv.Eventually(t, time.Minute, "the build to wait", func() bool { return b.get(id).Status == registry.StatusWaiting })
	if _, err := b.reg.UpdateBuild(ctx, id, func(x *registry.Build) error { x.Status = registry.StatusCanceled; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := b.wait(done); err != nil {
		t.Fatalf("a build canceled while waiting returned %v, want nil", err)
	}
	if got := b.get(id); got.Status != registry.StatusCanceled {
		t.Fatalf("build = %s %q, want canceled", got.Status, got.Detail)
	}
}

func TestANamespaceLimitRefusalGoesBackInLineWithoutSpendingAnAttempt(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	b.build = func(context.Context, recipe.Input) (*recipe.Output, error) {
		return nil, fmt.Errorf("sandbox: clone: %w", sandbox.ErrNamespaceLimit)
	}
	id := b.queued(2)
	// Even the last attempt goes back in line: it never ran.
	err := b.p.process(context.Background(), id, 2, 3)
	if !errors.Is(err, sandbox.ErrNamespaceLimit) || errors.Is(err, asynq.SkipRetry) || IsFailure(err) {
		t.Fatalf("returned %v, want the refusal, retried by asynq without counting", err)
	}
	got := b.get(id)
	if got.Status != registry.StatusQueued || got.Attempts != 1 || !strings.Contains(got.Detail, "back in line (no attempt spent)") {
		t.Fatalf("build = %s (attempts %d) %q, want queued with attempt 2 not spent", got.Status, got.Attempts, got.Detail)
	}
}

func TestAFinishedBuildDeliveredAgainNeedsNoWork(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	id := b.queued(2)
	if err := b.p.process(context.Background(), id, 1, 2); err != nil {
		t.Fatal(err)
	}
	ran := false
	b.build = func(ctx context.Context, in recipe.Input) (*recipe.Output, error) {
		ran = true
		return succeed(ctx, in)
	}
	if err := b.p.process(context.Background(), id, 2, 2); err != nil || ran {
		t.Fatalf("a second delivery returned %v and ran the recipe: %v; want nil, no run", err, ran)
	}
}
