package fleettest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/api"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/notify"
	"github.com/pkgfleet/pkgfleet/internal/pipeline"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/recipe"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/roster"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/pkgfleet/pkgfleet/internal/worker"
	"github.com/redis/go-redis/v9"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) {
	if spec := os.Getenv(childWorkerEnv); spec != "" {
		os.Exit(childWorker(spec)) // this process is a worker started by a test
	}
	os.Exit(testenv.MainWithRedis(m, &redisServer))
}

// fleet is an API and any number of worker servers on one Redis database;
// the workers build with a fake recipe that records what runs at once.
type fleet struct {
	t      testing.TB
	redis  *testenv.Redis
	db     int
	rdb    *redis.Client
	env    map[string]string // the settings cfg was loaded from
	cfg    *config.Config
	reg    *registry.Registry
	api    *httptest.Server
	srv    *api.Server
	dir    string
	recipe *fakeRecipe
}

func setup(t testing.TB, buildConcurrency int, settings ...string) *fleet {
	t.Helper()
	return setupOn(t, redisServer, buildConcurrency, settings...)
}

// setupOn is setup on a redis-server of the test's own.
func setupOn(t testing.TB, r *testenv.Redis, buildConcurrency int, settings ...string) *fleet {
	t.Helper()
	testenv.Require(t, "git")
	rdb, db := r.DB(t)
	dir := t.TempDir()
	env := r.Settings(dir, db)
	env["PKGFLEET_GIT_BUILDRETRIES"] = "2"
	env["PKGFLEET_GIT_BUILDCONCURRENCY"] = strconv.Itoa(buildConcurrency)
	for i := 0; i+1 < len(settings); i += 2 {
		env[settings[i]] = settings[i+1]
	}
	cfg := testenv.Config(t, env)
	for _, d := range []string{cfg.Server.TempDir, cfg.Server.DataDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := api.NewServer(cfg, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &fleet{t: t, redis: r, db: db, rdb: rdb, env: env, cfg: cfg, reg: registry.New(rdb), api: hs, srv: srv, dir: dir,
		recipe: &fakeRecipe{runner: sandbox.NewDirect(sandbox.Config{TempDir: cfg.Server.TempDir}), peak: map[string]int32{}}}
}

// worker starts one worker server with its own Redis connections, as a
// separate worker process would have, and returns a function that stops it
// the way SIGTERM does. Its pipeline is built as the worker's is, with the
// fleet's fake recipe; tune may adjust the pipeline's timings.
func (f *fleet) worker(name string, slots int, tune ...func(*pipeline.Deps)) (stop func()) {
	f.t.Helper()
	// asynq and the pipeline get connections of their own, so a test can
	// count what the pipeline sends.
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: f.redis.Socket, DB: f.db})
	hrdb := redis.NewClient(&redis.Options{Network: "unix", Addr: f.redis.Socket, DB: f.db})
	log := testenv.Logger(f.t).With("worker", name)
	hub := notify.New(hrdb, log, semaphore.WakeChannel, queue.CancelChannel)
	stopping := make(chan struct{})
	d := workerDeps(f.cfg, name, filepath.Join(f.dir, "builder-"+name), hrdb, hub, log, f.recipe)
	d.Stopping = stopping
	for _, fn := range tune {
		fn(&d)
	}
	h, err := pipeline.New(d)
	if err != nil {
		f.t.Fatal(err)
	}
	acfg := asynqConfig(slots, asynq.ErrorLevel)
	acfg.ShutdownTimeout = 2 * time.Second
	srv := asynq.NewServerFromRedisClient(rdb, acfg)
	mux := asynq.NewServeMux()
	mux.Handle(queue.TypeBuild, h)
	if err := srv.Start(mux); err != nil {
		f.t.Fatal(err)
	}
	report := func() roster.Worker {
		return roster.Worker{Name: name, Slots: slots, Running: h.Running(), MaxUserNamespaces: 7,
			NamespacesNeeded: 2 * slots, NamespacesInUse: 2 * h.Running(),
			Languages: map[string]roster.Language{registry.LangR: {Version: "4.4.1", Sandbox: "user-namespace"}}}
	}
	if err := roster.Heartbeat(context.Background(), rdb, report(), 3*time.Second); err != nil {
		f.t.Fatal(err)
	}
	beatCtx, stopBeat := context.WithCancel(context.Background())
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		roster.Beat(beatCtx, rdb, log, time.Second, report)
	}()
	sweeping := make(chan struct{})
	go func() {
		defer close(sweeping)
		h.Sweep(beatCtx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			stopBeat()
			<-beating
			<-sweeping
			close(stopping)
			srv.Shutdown()
			h.Wait(10 * time.Second)
			hub.Close()
			hrdb.Close()
			rdb.Close()
		})
	}
	f.t.Cleanup(stop)
	return stop
}

// workerDeps are the pipeline dependencies of a test worker named name:
// the worker's own, with builderDir for its checkouts, fake building R,
// and short slot leases, holds (FenceAfter) and parking rechecks.
func workerDeps(cfg *config.Config, name, builderDir string, rdb redis.UniversalClient, hub *notify.Hub, log *slog.Logger, fake *fakeRecipe) pipeline.Deps {
	own := *cfg
	own.Git.BuilderDir = builderDir
	return pipeline.Deps{
		Config: &own, Redis: rdb, Events: hub, Worker: name, Log: log,
		Languages:   pipeline.NewLanguages(map[string]pipeline.Language{registry.LangR: {Recipe: fake, Sandbox: "unsandboxed", Tier: "unsandboxed"}}),
		Slots:       shortLeases,
		FenceAfter:  3 * time.Second,
		ParkRecheck: 3 * time.Second,
		SweepEvery:  500 * time.Millisecond,
	}
}

func shortLeases(s *semaphore.Semaphore) {
	s.HoldLease, s.CheckEvery = 4*time.Second, 500*time.Millisecond
}

// asynqConfig is a test worker's asynq server: it takes tasks as a
// worker does, and retries them quickly.
func asynqConfig(slots int, level asynq.LogLevel) asynq.Config {
	return asynq.Config{
		Concurrency: slots, Queues: map[string]int{queue.Queue(registry.LangR): 1},
		TaskCheckInterval: worker.DefaultTaskCheckInterval, DelayedTaskCheckInterval: 100 * time.Millisecond,
		IsFailure: pipeline.IsFailure,
		RetryDelayFunc: func(n int, err error, _ *asynq.Task) time.Duration {
			return pipeline.RetryDelay(n, err, func(int) time.Duration { return 100 * time.Millisecond })
		},
		LogLevel: level,
	}
}

// builder makes a source, a repository with n tagged commits and a
// builder of it; it returns the tags' shas, oldest first.
func (f *fleet) builder(name, trigger string, n int) []string {
	f.t.Helper()
	dir, _ := testenv.Repo(f.t, map[string]string{"DESCRIPTION": "Package: " + name + "\nVersion: 0.0.1\n"})
	var shas []string
	for i := range n {
		sha := testenv.Commit(f.t, dir, map[string]string{"DESCRIPTION": fmt.Sprintf("Package: %s\nVersion: 1.%d\n", name, i)}, fmt.Sprint("v", i))
		testenv.Git(f.t, dir, "tag", fmt.Sprintf("v1.%d", i))
		shas = append(shas, sha)
	}
	ctx := context.Background()
	if _, err := f.reg.CreateSource(ctx, registry.Source{Name: "src", Type: registry.TypeGit}); err != nil && !strings.Contains(err.Error(), "exists") {
		f.t.Fatal(err)
	}
	b := &registry.Builder{Source: "src", Name: name, URL: "file://" + dir, BuildTrigger: trigger, CloneDepth: 1}
	if err := (registry.Policy{URLs: git.URLPolicy{AllowFile: true}}).ValidateBuilder(b); err != nil {
		f.t.Fatal(err)
	}
	if err := f.reg.CreateBuilder(ctx, b); err != nil {
		f.t.Fatal(err)
	}
	return shas
}

func (f *fleet) do(method, path string, body any, want int) []byte {
	f.t.Helper()
	return testenv.JSON(f.t, method, f.api.URL+path, body, want)
}

// rerun queues a build of one commit through the API.
func (f *fleet) rerun(builder, sha string) int64 {
	f.t.Helper()
	var resp struct{ Builds []registry.Build }
	json.Unmarshal(f.do("POST", "/api/v1/sources/src/git-builders/"+builder+"/rerun", map[string]string{"commit_sha": sha}, 202), &resp)
	return resp.Builds[0].ID
}

func (f *fleet) build(id int64) *registry.Build {
	f.t.Helper()
	b, err := f.reg.Build(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *fleet) waitStatus(id int64, status string) *registry.Build {
	f.t.Helper()
	return f.waitStatusFor(id, status, 30*time.Second)
}

func (f *fleet) waitStatusFor(id int64, status string, timeout time.Duration) *registry.Build {
	f.t.Helper()
	var b *registry.Build
	testenv.Eventually(f.t, timeout, fmt.Sprintf("build %d to be %s", id, status), func() bool {
		b = f.build(id)
		return b.Status == status
	})
	return b
}

// fakeRecipe "builds" by running a shell command (sleep by default) and
// records how many builds of each builder run at once.
type fakeRecipe struct {
	runner  sandbox.Runner
	command atomic.Value // string: shell command; "" = sleep 0.2
	mu      sync.Mutex
	running map[string]int32
	peak    map[string]int32
	calls   atomic.Int32
}

func (r *fakeRecipe) Build(ctx context.Context, in recipe.Input) (*recipe.Output, error) {
	r.calls.Add(1)
	desc, err := os.ReadFile(filepath.Join(in.Checkout, "DESCRIPTION"))
	if err != nil {
		return nil, err
	}
	pkg := strings.TrimSpace(strings.TrimPrefix(strings.Split(string(desc), "\n")[0], "Package:"))
	r.mu.Lock()
	if r.running == nil {
		r.running = map[string]int32{}
	}
	r.running[pkg]++
	r.peak[pkg] = max(r.peak[pkg], r.running[pkg])
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.running[pkg]--; r.mu.Unlock() }()

	cmd, _ := r.command.Load().(string)
	if cmd == "" {
		cmd = "sleep 0.2"
	}
	res, err := r.runner.Run(ctx, sandbox.Spec{Args: []string{"/bin/sh", "-c", cmd}, Dir: in.Checkout,
		Source: in.Checkout, Dest: in.Dest, Output: in.Log, Env: []string{"PATH=/usr/bin:/bin", "OUT=" + in.Dest}})
	if err != nil {
		return nil, err
	}
	if !res.Success() {
		return nil, &recipe.Failure{Reason: fmt.Sprintf("fake build: exit %d %s %s", res.ExitCode, res.Signal, res.Killed)}
	}
	file := filepath.Join(in.Dest, pkg+".tar.gz")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		return nil, err
	}
	return &recipe.Output{Package: pkg, Version: "1", Artifacts: []registry.Artifact{{File: filepath.Base(file), Kind: "source"}}}, nil
}

func (r *fakeRecipe) peakOf(pkg string) int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peak[pkg]
}

func TestTagBuilderRunsAtMostBuildConcurrencyAcrossThreeWorkers(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	shas := f.builder("tagged", registry.TriggerTags, 8)
	for i := range 3 {
		f.worker(fmt.Sprint("w", i), 2) // 6 worker slots for a limit of 2
	}
	var ids []int64
	for _, sha := range shas {
		ids = append(ids, f.rerun("tagged", sha))
	}
	sawWaiting := ""
	testenv.Eventually(t, time.Minute, "all eight builds to finish", func() bool {
		done := 0
		for _, id := range ids {
			b := f.build(id)
			if b.Status == registry.StatusWaiting && sawWaiting == "" {
				sawWaiting = b.Detail
			}
			if registry.Terminal(b.Status) {
				done++
			}
		}
		return done == len(ids)
	})
	for _, id := range ids {
		if b := f.build(id); b.Status != registry.StatusSucceeded || b.Attempts != 1 {
			t.Fatalf("build %d: %s after %d attempts (%s)", id, b.Status, b.Attempts, b.Detail)
		}
	}
	if got := f.recipe.peakOf("tagged"); got != 2 {
		t.Fatalf("observed maximum concurrency %d, want exactly Git.BuildConcurrency = 2", got)
	}
	// A build queued later waits in line even while the builds ahead of
	// it have not taken their slots yet ("0 of 2 in use; 3rd in line").
	if !regexp.MustCompile(`waiting for a build slot \([0-2] of 2 in use; [0-9]+(st|nd|rd|th) in line\)`).MatchString(sawWaiting) {
		t.Fatalf("no build was seen waiting with the slot detail (saw %q)", sawWaiting)
	}
	t.Logf("a waiting build said: %s", sawWaiting)
}

func TestCommitBuilderNeverOverlapsItself(t *testing.T) {
	t.Parallel()
	f := setup(t, 5)
	shas := f.builder("head", registry.TriggerCommits, 4)
	f.worker("a", 2)
	f.worker("b", 2)
	var ids []int64
	for _, sha := range shas {
		ids = append(ids, f.rerun("head", sha))
	}
	for _, id := range ids {
		if b := f.waitStatus(id, registry.StatusSucceeded); b.Attempts != 1 {
			t.Fatalf("build %d took %d attempts", id, b.Attempts)
		}
	}
	if got := f.recipe.peakOf("head"); got != 1 {
		t.Fatalf("a commit builder ran %d builds at once, want 1", got)
	}
}

func TestCancelQueuedBuildDeletesItsTask(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	shas := f.builder("q", registry.TriggerCommits, 1)
	id := f.rerun("q", shas[0]) // no worker is running: it stays queued
	var b registry.Build
	json.Unmarshal(f.do("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", id), nil, 200), &b)
	if b.Status != registry.StatusCanceled || b.FinishedAt == nil {
		t.Fatalf("cancel answered %+v", b)
	}
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	if _, err := insp.GetTaskInfo(queue.Queue(registry.LangR), queue.TaskID("src", "q", shas[0])); err == nil {
		t.Fatal("the canceled build's task is still queued")
	}
	// A second cancel is a conflict; a worker started now builds nothing.
	f.do("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", id), nil, 409)
	f.worker("late", 1)
	// Another build of the same builder shows the worker is up.
	other := f.rerun("q", testenv.Git(t, strings.TrimPrefix(f.builderURL("q"), "file://"), "rev-parse", "HEAD~1"))
	f.waitStatus(other, registry.StatusSucceeded)
	if got := f.build(id); got.Status != registry.StatusCanceled || got.Attempts != 0 {
		t.Fatalf("canceled build became %s after %d attempts", got.Status, got.Attempts)
	}
	if n := f.recipe.calls.Load(); n != 1 {
		t.Fatalf("recipe ran %d times, want 1 (only the other build)", n)
	}
}

func (f *fleet) builderURL(name string) string {
	b, err := f.reg.Builder(context.Background(), "src", name)
	if err != nil {
		f.t.Fatal(err)
	}
	return b.URL
}

func TestCancelRunningBuildKillsItsProcessesAndIsNotRetried(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	shas := f.builder("long", registry.TriggerCommits, 1)
	pidFile := filepath.Join(t.TempDir(), "pid")
	f.recipe.command.Store(fmt.Sprintf("sleep 300 & echo $! > %s; wait", pidFile))
	f.worker("w", 1)
	id := f.rerun("long", shas[0])
	f.waitStatus(id, registry.StatusRunning)
	var pid int
	testenv.Eventually(t, 30*time.Second, "the build's process to start", func() bool {
		b, err := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	f.do("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", id), nil, 200)
	testenv.Eventually(t, 10*time.Second, "the build's sleep process to be killed", func() bool {
		return syscall.Kill(pid, 0) != nil
	})
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	testenv.Eventually(t, 10*time.Second, "the task to leave asynq (not retried)", func() bool {
		_, err := insp.GetTaskInfo(queue.Queue(registry.LangR), queue.TaskID("src", "long", shas[0]))
		return err != nil
	})
	b := f.build(id)
	if b.Status != registry.StatusCanceled || b.Attempts != 1 || f.recipe.calls.Load() != 1 {
		t.Fatalf("build %s after %d attempts, %d recipe runs; want canceled after 1", b.Status, b.Attempts, f.recipe.calls.Load())
	}
	if h, _ := semaphore.New(f.rdb).Holders(context.Background(), queue.SlotKey("src", "long")); len(h) != 0 {
		t.Fatalf("the canceled build still holds its slot: %v", h)
	}
}

func TestCancelWaitingBuildGivesUpItsPlace(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	shas := f.builder("serial", registry.TriggerCommits, 2)
	release := filepath.Join(t.TempDir(), "go")
	f.recipe.command.Store(fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done", release))
	f.worker("w", 2)
	first := f.rerun("serial", shas[0])
	f.waitStatus(first, registry.StatusRunning)
	second := f.rerun("serial", shas[1])
	if b := f.waitStatus(second, registry.StatusWaiting); !strings.Contains(b.Detail, "1 of 1 in use") {
		t.Fatalf("waiting detail = %q", b.Detail)
	}
	f.do("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", second), nil, 200)
	os.WriteFile(release, nil, 0o644)
	f.waitStatus(first, registry.StatusSucceeded)
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	testenv.Eventually(t, 10*time.Second, "the canceled task to leave asynq", func() bool {
		_, err := insp.GetTaskInfo(queue.Queue(registry.LangR), queue.TaskID("src", "serial", shas[1]))
		return err != nil
	})
	if b := f.build(second); b.Status != registry.StatusCanceled || f.recipe.calls.Load() != 1 {
		t.Fatalf("canceled waiting build is %s; recipe ran %d times, want 1", b.Status, f.recipe.calls.Load())
	}
}

func TestShutdownRequeuesRunningBuildsLeavesParkedOnesInLineAndReleasesSlots(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	shas := f.builder("grace", registry.TriggerCommits, 2)
	release := filepath.Join(t.TempDir(), "go")
	f.recipe.command.Store(fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done", release))
	stopA := f.worker("a", 2)
	first := f.rerun("grace", shas[0])
	f.waitStatus(first, registry.StatusRunning)
	second := f.rerun("grace", shas[1])
	f.waitStatus(second, registry.StatusWaiting)
	// SIGTERM: the running build gets the grace period (2s here) and is
	// then requeued. The parked one belongs to no worker: it keeps its
	// place in line. Nothing may keep a slot.
	stopA()
	if h, _ := semaphore.New(f.rdb).Holders(context.Background(), queue.SlotKey("src", "grace")); len(h) != 0 {
		t.Fatalf("slots still held after shutdown: %v", h)
	}
	if b := f.build(first); b.Status != registry.StatusQueued {
		t.Fatalf("running build %d is %s after shutdown (%s), want queued", first, b.Status, b.Detail)
	}
	if b := f.build(second); b.Status != registry.StatusWaiting || !strings.Contains(b.Detail, "1st in line") {
		t.Fatalf("parked build %d is %s after shutdown (%s), want waiting, 1st in line", second, b.Status, b.Detail)
	}
	os.WriteFile(release, nil, 0o644)
	f.worker("b", 2)
	for _, id := range []int64{first, second} {
		f.waitStatus(id, registry.StatusSucceeded)
	}
}

// A parked build costs its worker nothing while it waits: it comes back
// once per ParkRecheck (1m by default) to check its place, a handful of
// Redis commands, unless a release wakes it first.
func TestParkedBuildCostsFewRedisCommandsPerMinute(t *testing.T) {
	t.Parallel()
	f := setup(t, 1)
	shas := f.builder("cost", registry.TriggerCommits, 2)
	release := filepath.Join(t.TempDir(), "go")
	f.recipe.command.Store(fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done", release))
	const period = 200 * time.Millisecond
	var waiterClient redis.UniversalClient
	f.worker("holder", 1)
	first := f.rerun("cost", shas[0])
	f.waitStatus(first, registry.StatusRunning)
	f.worker("waiter", 1, func(d *pipeline.Deps) {
		d.ParkRecheck, d.SweepEvery = period, time.Hour
		waiterClient = d.Redis
	})
	second := f.rerun("cost", shas[1])
	f.waitStatus(second, registry.StatusWaiting)
	counter := &testenv.CommandCounter{}
	waiterClient.AddHook(counter)
	start := time.Now()
	time.Sleep(30 * period) // the measurement window, not a synchronisation
	n, by := counter.Total()
	rechecks := by["sadd"] // one per return to the line
	if rechecks < 3 {
		t.Fatalf("the parked build came back %d times in %s, want several: %v", rechecks, time.Since(start), by)
	}
	perMinute := float64(n) / float64(rechecks) // one recheck a minute by default
	t.Logf("a parked build came back %d times and sent %d commands %v: %.1f a minute with the 1m default", rechecks, n, by, perMinute)
	if perMinute > 10 {
		t.Fatalf("a parked build costs %.1f commands per recheck, want at most 10", perMinute)
	}
	os.WriteFile(release, nil, 0o644)
	f.waitStatus(second, registry.StatusSucceeded)
}

func TestShutdownDuringTheLastAttemptRequeuesTheBuild(t *testing.T) {
	t.Parallel()
	f := setup(t, 2, "PKGFLEET_GIT_BUILDRETRIES", "1") // the first attempt is the last
	shas := f.builder("last", registry.TriggerCommits, 1)
	release := filepath.Join(t.TempDir(), "go")
	f.recipe.command.Store(fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done", release))
	stop := f.worker("a", 1)
	id := f.rerun("last", shas[0])
	f.waitStatus(id, registry.StatusRunning)
	stop() // SIGTERM; the build outlives the grace period
	if b := f.build(id); b.Status != registry.StatusQueued {
		t.Fatalf("build is %s after the shutdown (%s), want queued: a shutdown costs no attempt", b.Status, b.Detail)
	}
	os.WriteFile(release, nil, 0o644)
	f.worker("b", 1)
	if b := f.waitStatus(id, registry.StatusSucceeded); b.Worker != "b" {
		t.Fatalf("finished on %s", b.Worker)
	}
}
