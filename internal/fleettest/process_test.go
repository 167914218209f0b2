package fleettest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/notify"
	"github.com/pkgfleet/pkgfleet/internal/pipeline"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// childWorkerEnv makes the test binary run as a worker process (see
// TestMain), so a test can SIGKILL a real worker mid-build.
const childWorkerEnv = "PKGFLEET_FLEETTEST_WORKER"

type childSpec struct {
	Env map[string]string // the fleet's settings
	// Redis is the address of the fleet's Redis, its unix socket unless
	// the spec gave one (a relay's host:port in another namespace).
	Redis                              string
	Name, BuilderDir, TempDir, Command string
	DB, Slots                          int
	// Netns is the network namespace the child runs in ("": the test's).
	Netns *testenv.Netns `json:"-"`
	// API makes the child serve the API (on a port it writes to Addr)
	// instead of builds.
	API  bool
	Addr string
	// Noop makes a worker build with noopRecipe and the pipeline's
	// default timings, as the cost benchmark needs.
	Noop bool
	// Stats is where the child writes its Redis command count on SIGUSR1.
	Stats string
	// TaskCheck, when set, is the worker's task-check interval instead of
	// worker.DefaultTaskCheckInterval.
	TaskCheck time.Duration
}

func (spec childSpec) config() (*config.Config, error) {
	return config.Load(config.Source{Getenv: func(k string) string { return spec.Env[k] }})
}

// childWorker serves builds (or the API) until it is killed.
func childWorker(raw string) int {
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if spec.API {
		fmt.Fprintln(os.Stderr, childAPI(spec))
		return 1
	}
	cfg, err := spec.config()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("worker", spec.Name)
	c := &commandCounter{}
	serveStats(spec.Stats, c)
	rdb := counted(spec.Redis, spec.DB, c)
	hub := notify.New(rdb, log, semaphore.WakeChannel, queue.CancelChannel)
	recipe := &fakeRecipe{runner: sandbox.NewDirect(sandbox.Config{TempDir: spec.TempDir}), peak: map[string]int32{}}
	recipe.command.Store(spec.Command)
	d := workerDeps(cfg, spec.Name, spec.BuilderDir, rdb, hub, log, recipe)
	acfg := asynqConfig(spec.Slots, asynq.WarnLevel)
	if spec.TaskCheck > 0 {
		acfg.TaskCheckInterval = spec.TaskCheck
	}
	if spec.Noop {
		d.Languages = pipeline.NewLanguages(map[string]pipeline.Language{registry.LangR: {Recipe: noopRecipe{tarball: noopTarball()}, Sandbox: "unsandboxed", Tier: "unsandboxed"}})
		d.Slots, d.FenceAfter, d.ParkRecheck, d.SweepEvery = nil, 0, 0, 0
		acfg.DelayedTaskCheckInterval = 0
	}
	h, err := pipeline.New(d)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go h.Sweep(context.Background())
	srv := asynq.NewServerFromRedisClient(rdb, acfg)
	mux := asynq.NewServeMux()
	mux.Handle(queue.TypeBuild, h)
	if err := srv.Run(mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// process starts a worker process with slots build slots, running command
// as its build.
func (f *fleet) process(name string, slots int, command string) *exec.Cmd {
	f.t.Helper()
	return f.child(childSpec{Name: name, Slots: slots, Command: command})
}

// child starts a child process of the test binary as spec says, on the
// fleet's settings and Redis database.
func (f *fleet) child(spec childSpec) *exec.Cmd {
	f.t.Helper()
	name := spec.Name
	spec.Env, spec.DB = maps.Clone(f.env), f.db
	if spec.Redis == "" {
		spec.Redis = f.redis.Socket
	}
	spec.Env["PKGFLEET_REDIS_ADDRESS"] = spec.Redis
	spec.BuilderDir, spec.TempDir = filepath.Join(f.dir, "builder-"+name), f.cfg.Server.TempDir
	raw, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if spec.Netns != nil {
		cmd = spec.Netns.Command(os.Args[0], "-test.run=^$")
	}
	cmd.Env = append(os.Environ(), childWorkerEnv+"="+string(raw))
	logf, err := os.Create(filepath.Join(f.dir, name+".log"))
	if err != nil {
		f.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if f.t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			f.t.Logf("log of worker process %s:\n%s", name, out)
		}
	})
	return cmd
}

func TestKilledWorkersSlotReturnsAndItsBuildCompletesElsewhere(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for asynq's recoverer (about 1-2 minutes)")
	}
	t.Parallel()
	f := setup(t, 2)
	shas := f.builder("crash", registry.TriggerCommits, 2) // a commit builder: one slot
	pidFile := filepath.Join(t.TempDir(), "pid")
	// A has one slot, so the second build cannot go to A (and die with it).
	a := f.process("A", 1, fmt.Sprintf("echo $$ > %s; exec sleep 300", pidFile))
	first := f.rerun("crash", shas[0])
	if b := f.waitStatus(first, registry.StatusRunning); b.Worker != "A" {
		t.Fatalf("build ran on %q", b.Worker)
	}
	f.process("B", 2, "sleep 0.1")
	second := f.rerun("crash", shas[1])
	if b := f.waitStatus(second, registry.StatusWaiting); !strings.Contains(b.Detail, "1 of 1 in use") {
		t.Fatalf("second build: %s", b.Detail)
	}
	var buildPid int
	testenv.Eventually(t, 30*time.Second, "the build's process", func() bool {
		b, err := os.ReadFile(pidFile)
		fmt.Sscan(string(b), &buildPid)
		return err == nil && buildPid > 0
	})

	// SIGKILL worker A mid-build: no handler runs, nothing is released.
	if err := a.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	a.Wait()
	killed := time.Now()
	// Its slot comes back when its lease (2s here, 60s by default) ends,
	// and the waiting build on B takes it.
	b := f.waitStatus(second, registry.StatusSucceeded)
	t.Logf("the waiting build got the killed worker's slot and finished %s after the kill", time.Since(killed).Round(time.Millisecond))
	if b.Worker != "B" || time.Since(killed) > 10*time.Second {
		t.Fatalf("second build finished on %s after %s", b.Worker, time.Since(killed))
	}
	testenv.Eventually(t, 10*time.Second, "the killed build's process to die with its worker", func() bool {
		return syscall.Kill(buildPid, 0) != nil
	})

	// asynq's recoverer hands the killed build to B (lease 30s, then up
	// to a minute for the recoverer's tick).
	var done *registry.Build
	testenv.Eventually(t, 3*time.Minute, "the killed build to complete elsewhere", func() bool {
		done = f.build(first)
		return registry.Terminal(done.Status)
	})
	t.Logf("the killed build was recovered and finished %s after the kill", time.Since(killed).Round(time.Second))
	if done.Status != registry.StatusSucceeded || done.Worker != "B" || done.Attempts != 2 {
		t.Fatalf("killed build: %s on %s after %d attempts (%s)", done.Status, done.Worker, done.Attempts, done.Detail)
	}
	// The worker writes the build's last record, then releases its slot:
	// the slot goes a moment after the record says succeeded.
	testenv.Eventually(t, 10*time.Second, "the builder's slots to be released", func() bool {
		h, err := semaphore.New(f.rdb).Holders(context.Background(), queue.SlotKey("src", "crash"))
		return err == nil && len(h) == 0
	})
}

func TestTagBuilderConcurrencyHoldsAcrossThreeWorkerProcesses(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	shas := f.builder("tags", registry.TriggerTags, 8)
	events := filepath.Join(t.TempDir(), "events")
	// Each build appends "+" when it starts and "-" when it ends; small
	// O_APPEND writes keep their order across processes. One asynq slot
	// each: three builds could run at once but for the semaphore, and
	// they must spread over the processes.
	for _, name := range []string{"P1", "P2", "P3"} {
		// A build waits (up to 5s) for a second one to start, so that
		// two overlap whenever the semaphore allows it.
		f.process(name, 1, fmt.Sprintf(`echo + >> %[1]s; i=0; while [ "$(grep -c + %[1]s)" -lt 2 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; sleep 0.3; echo - >> %[1]s`, events))
	}
	var ids []int64
	for _, sha := range shas {
		ids = append(ids, f.rerun("tags", sha))
	}
	for _, id := range ids {
		if b := f.waitStatus(id, registry.StatusSucceeded); b.Attempts != 1 {
			t.Fatalf("build %d took %d attempts", id, b.Attempts)
		}
	}
	data, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	running, peak, workers := 0, 0, map[string]bool{}
	for _, ev := range strings.Fields(string(data)) {
		if ev == "+" {
			running++
		} else {
			running--
		}
		peak = max(peak, running)
	}
	for _, id := range ids {
		workers[f.build(id).Worker] = true
	}
	t.Logf("8 builds on %d worker processes, observed maximum concurrency %d", len(workers), peak)
	if peak != 2 || strings.Count(string(data), "+") != 8 {
		t.Fatalf("observed maximum concurrency %d over %d builds, want exactly 2 over 8:\n%s", peak, strings.Count(string(data), "+"), data)
	}
	if len(workers) < 2 {
		t.Fatalf("all builds ran on %v; the test needs several processes", workers)
	}
}
