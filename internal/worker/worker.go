// Package worker assembles a pkgfleet worker process: it picks the runner
// (the user-namespace sandbox, or unsandboxed only when allowed), detects R
// and Python through it, and serves the build queues of the languages it
// can build with an asynq server. cmd/worker only parses flags and calls
// Run.
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/detect"
	"github.com/pkgfleet/pkgfleet/internal/metrics"
	"github.com/pkgfleet/pkgfleet/internal/notify"
	"github.com/pkgfleet/pkgfleet/internal/pipeline"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/roster"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/pkgfleet/pkgfleet/internal/store"
	"github.com/redis/go-redis/v9"
)

// DefaultTaskCheckInterval is how often an idle worker asks Redis for a
// build, unless Worker.TaskCheckInterval says otherwise. asynq polls (it sleeps between a half and one and a half of this
// when its queues are empty, and nothing can wake it sooner), so this sets
// how soon a push on an idle fleet starts building: at 20 ms the pickup
// wait is about 11 ms on average (27 ms at 50 ms, 270 ms at asynq's
// 500 ms). The price is paid while idle: 50 checks a second, each a
// dequeue script per queue the worker serves (so 50 to 100 Redis commands
// a second per idle worker; TestIdleWorkerCost measures commands and CPU
// against 50 ms). Issue 12 item 5 asks p50 <= 100 ms from push to build
// process; with a clone and a launch on a busy machine, 50 ms did not
// leave room.
const DefaultTaskCheckInterval = 20 * time.Millisecond

// Options are what a test or main may change beyond the config.
type Options struct {
	Name string // worker name; default host:pid
	// RetryDelay overrides the delay before retry n (tests use tiny ones).
	RetryDelay func(n int) time.Duration
	// TaskCheckInterval is how often an idle worker looks for work
	// (default DefaultTaskCheckInterval).
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often retries that are due are
	// moved back to their queue (asynq's default is 5s).
	DelayedTaskCheckInterval time.Duration
	// Slots, when set, adjusts the build-slot semaphore (tests use short
	// leases).
	Slots func(*semaphore.Semaphore)
	// FenceAfter, ParkRecheck and SweepEvery are the pipeline's (see
	// pipeline.Deps; tests use short ones).
	FenceAfter, ParkRecheck, SweepEvery time.Duration
	// HeartbeatEvery is how often the worker reports itself to the fleet
	// list (default 10s; it drops off after three missed beats).
	HeartbeatEvery time.Duration
	// BeforeProbe, when set, is called before each probe of a language,
	// at start and on re-probes (tests lower the user-namespace limit
	// there to make one probe fail).
	BeforeProbe func(lang string)
}

// Worker is a configured worker, ready to Run.
type Worker struct {
	cfg    *config.Config
	log    *slog.Logger
	opts   Options
	scfg   sandbox.Config
	direct sandbox.Runner
	langs  *pipeline.Languages // what the pipeline builds now: probes change it
	// pipeline runs the builds; Run sets it once Redis answers.
	pipeline atomic.Pointer[pipeline.Pipeline]
	maxNS    int // /proc/sys/user/max_user_namespaces, -1 if unknown
	started  time.Time
	metrics  *metrics.Worker
	ready    atomic.Bool  // serving builds with Redis reachable (readyz)
	opsAddr  atomic.Value // string: where serveOps listens

	mu         sync.Mutex // guards the fields below, which re-probes change
	ns         *sandbox.Namespaces
	sandboxErr error // why ns is nil
	// store keeps the artifacts; storeErr is why it failed its check
	// (the worker then takes no builds, as without a sandbox).
	store    store.Artifacts
	storeErr error
	// limitRefused is set when max_user_namespaces refused a probe: a
	// refusal that may pass later, so New does not give up.
	limitRefused bool
	tools        map[string]detect.Tool
	runners      map[string]sandbox.Runner // by language: what builds it
	slots        int                       // build slots, capped by the namespace limit and the tier
	changed      chan struct{}             // signalled when queues or slots changed (serve restarts asynq)

	gate    gate    // the worker's slots, across its asynq servers
	servers servers // started by serve
}

// OpsAddr is the address of /metrics, /healthz and /readyz once Run has
// started them ("" when Worker.MetricsListen is empty).
func (w *Worker) OpsAddr() string {
	s, _ := w.opsAddr.Load().(string)
	return s
}

// ErrNothingToBuild is returned when neither R nor Python is usable.
var ErrNothingToBuild = errors.New(`no language can be built on this worker.
Remedies:
  - let the worker create unprivileged user namespaces:
      RHEL/CentOS:     sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d/ to keep it)
      Debian <= 10:    sysctl -w kernel.unprivileged_userns_clone=1
      Ubuntu 24.04:    give pkgfleet-worker an AppArmor profile with "userns," (see docs/sandbox.md),
                       or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0
      Docker:          Docker's default seccomp profile refuses the sandbox; run with
                       --security-opt seccomp=deploy/profiles/pkgfleet-worker.json, or with
                       --security-opt seccomp=unconfined --security-opt apparmor=unconfined
      Kubernetes:      the chart's defaults (seccomp and AppArmor Unconfined on the worker
                       container), or its Localhost seccomp/AppArmor profiles
    A masked /proc (Docker's and Kubernetes' defaults) is not a blocker: the worker then
    builds in the masked-proc tier (docs/sandbox.md).
  - install R (r-base-core) and/or Python with the build module (python3-build)
  - or set Git.AllowUnsandboxedGitBuilds = true to build without a sandbox (insecure)`)

// New detects what this worker can build. It fails with ErrNothingToBuild
// when that is nothing, unless the user-namespace limit refused a probe:
// that passes, so the worker stays up and re-probes.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) (*Worker, error) {
	if opts.Name == "" {
		host, _ := os.Hostname()
		opts.Name = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	// The run-as user must be able to reach the checkouts it builds; the
	// sandbox hides everything else in these directories.
	for _, dir := range []string{WorkDir(cfg), cfg.FileStorage.Location} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
	}
	// The sandbox binds checkouts by symlink-free paths. The worker keeps
	// its own copy of the settings with that path; the caller's is left
	// alone.
	if real, err := filepath.EvalSymlinks(WorkDir(cfg)); err == nil {
		own := *cfg
		own.Git.BuilderDir = filepath.Dir(real)
		cfg = &own
	}
	scfg := SandboxConfig(cfg)
	if err := sandbox.CleanStale(scfg); err != nil {
		log.Warn("could not remove stale build workspaces", "error", err)
	}
	w := &Worker{
		cfg: cfg, log: log, opts: opts, scfg: scfg, direct: sandbox.NewDirect(scfg),
		langs: &pipeline.Languages{}, maxNS: -1, started: time.Now().UTC(),
		tools: map[string]detect.Tool{}, runners: map[string]sandbox.Runner{},
		slots: cfg.Worker.Concurrency, changed: make(chan struct{}, 1),
	}
	if max, err := sandbox.MaxUserNamespaces(); err == nil {
		w.maxNS = max
	}
	w.metrics = metrics.NewWorker(metrics.WorkerState{
		Name:              opts.Name,
		Slots:             w.Slots,
		NamespacesInUse:   w.namespacesInUse,
		MaxUserNamespaces: sandbox.MaxUserNamespaces,
		ObjectCache:       w.objectCache,
		Tiers:             []string{string(sandbox.TierFull), string(sandbox.TierMaskedProc), string(sandbox.TierNone)},
	})
	if cfg.Git.AllowUnsandboxedGitBuilds {
		log.Warn("Git.AllowUnsandboxedGitBuilds = true: a language the sandbox cannot run is built WITHOUT isolation; only build repositories you trust")
	}
	w.probeSandbox(log)
	for _, lang := range languages {
		w.probeLanguage(ctx, log, lang)
		if _, ok := w.runners[lang]; !ok {
			w.metrics.LanguageUsable(lang, false)
		}
	}
	if len(w.tools) == 0 && !w.limitRefused {
		// ErrNothingToBuild's remedies are the kernel's; a refusal that
		// names a directory or a user is the whole story.
		var pe *sandbox.PreconditionError
		if errors.As(w.sandboxErr, &pe) {
			return nil, fmt.Errorf("no language can be built on this worker: %w", pe)
		}
		return nil, ErrNothingToBuild
	}
	w.setSlots()
	return w, nil
}

// Slots is how many builds this worker runs at once now.
func (w *Worker) Slots() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.slots
}

// objectCache reads the figures of the pipeline's git object cache.
func (w *Worker) objectCache() (bytes, hits, misses, evictions int64) {
	pl := w.pipeline.Load()
	if pl == nil {
		return -1, 0, 0, 0
	}
	st := pl.ObjectCache()
	return st.Bytes, st.Hits, st.Misses, st.Evictions
}

func (w *Worker) namespacesInUse() int {
	w.mu.Lock()
	ns := w.ns
	w.mu.Unlock()
	if ns == nil {
		return 0
	}
	return ns.InUse()
}

// serveOps serves /metrics, /healthz and /readyz on Worker.MetricsListen
// until ctx ends. It starts before Redis is reached, so that readiness
// says "not ready" while the worker waits for it.
func (w *Worker) serveOps(ctx context.Context, rc redis.UniversalClient) error {
	addr := w.cfg.Worker.MetricsListen
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", w.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprintln(rw, "ok") })
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		pctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if !w.ready.Load() || rc.Ping(pctx).Err() != nil {
			http.Error(rw, "not ready: waiting for Redis or shutting down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ready")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("Worker.MetricsListen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	w.opsAddr.Store(ln.Addr().String())
	w.log.Info("worker metrics and health", "address", ln.Addr().String())
	return nil
}

// Run serves builds until ctx ends, then shuts down gracefully: running
// builds get Worker.ShutdownGrace to finish and are requeued after that.
func (w *Worker) Run(ctx context.Context) error {
	rc, err := redisconn.WorkerClient(w.cfg.Redis)
	if err != nil {
		return err
	}
	defer rc.Close()
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOps()
	if err := w.serveOps(opsCtx, rc); err != nil {
		return err
	}
	if err := redisconn.WaitReady(ctx, rc, w.log, redisconn.Describe(w.cfg.Redis)); err != nil {
		return err
	}
	st, err := store.New(ctx, w.cfg)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.store = st
	w.mu.Unlock()
	w.checkStore(ctx, w.log)
	hub := notify.New(rc, w.log, semaphore.WakeChannel, queue.CancelChannel)
	defer hub.Close()
	stopping := make(chan struct{})
	pl, err := pipeline.New(pipeline.Deps{
		Config: w.cfg, Redis: rc, Events: hub, Languages: w.langs,
		Worker: w.opts.Name, Store: st, Log: w.log, Metrics: w.metrics, Stopping: stopping,
		Slots: w.opts.Slots, FenceAfter: cmp.Or(w.opts.FenceAfter, w.cfg.Worker.FenceAfter), ParkRecheck: w.opts.ParkRecheck, SweepEvery: w.opts.SweepEvery,
		Durability: redisconn.DurabilityOf(w.cfg.Redis),
	})
	if err != nil {
		return err
	}
	w.pipeline.Store(pl)
	beatCtx, stopBeat := context.WithCancel(context.WithoutCancel(ctx))
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		roster.Beat(beatCtx, rc, w.log, cmp.Or(w.opts.HeartbeatEvery, 10*time.Second), w.Info)
	}()
	sweeping := make(chan struct{})
	go func() {
		defer close(sweeping)
		pl.Sweep(beatCtx)
	}()
	probeCtx, stopProbes := context.WithCancel(ctx)
	reprobing := make(chan struct{})
	go func() {
		defer close(reprobing)
		w.reprobe(probeCtx)
	}()
	err = w.serve(ctx, rc)
	stopProbes()
	<-reprobing // a probe under way ends with its context
	w.ready.Store(false)
	// Off the fleet list first: the API stops counting this worker.
	stopBeat()
	<-beating
	<-sweeping
	w.log.Info("worker stopping: no new builds; running builds may finish", "grace", w.cfg.Worker.ShutdownGrace)
	close(stopping)
	w.shutdown()
	// asynq has requeued what did not finish in time; let those handlers
	// record it and release their slots before Redis is closed.
	if !pl.Wait(15 * time.Second) {
		w.log.Warn("some builds did not stop in time; their slots return when their leases end")
	}
	return err
}

// Info is what the worker reports to the fleet list.
func (w *Worker) Info() roster.Worker {
	host, _ := os.Hostname()
	w.mu.Lock()
	defer w.mu.Unlock()
	info := roster.Worker{
		Name: w.opts.Name, Host: host, PID: os.Getpid(), Languages: map[string]roster.Language{},
		SandboxTier: string(sandbox.TierNone), Slots: w.slots, MaxUserNamespaces: w.maxNS, StartedAt: w.started,
	}
	sandboxed := false
	for lang, t := range w.tools {
		mode := w.runners[lang].Mode()
		info.Languages[lang] = roster.Language{Version: t.Version, Path: t.Path, Sandbox: mode, Platform: t.Platform}
		sandboxed = sandboxed || mode == "user-namespace"
	}
	if pl := w.pipeline.Load(); pl != nil {
		info.Running = pl.Running()
	}
	if sandboxed {
		info.NamespacesNeeded = roster.NamespacesPerBuild * w.slots
	}
	if w.ns == nil && w.sandboxErr != nil {
		info.SandboxRefusal = w.sandboxErr.Error()
	}
	if w.storeErr != nil {
		info.StoreRefusal = w.storeErr.Error()
	}
	if w.ns != nil {
		info.SandboxTier = string(w.ns.Tier())
		info.NamespacesInUse = w.ns.InUse()
	}
	return info
}

// defaultRetryDelay backs off from about 15s to 10m with jitter.
func defaultRetryDelay(n int) time.Duration {
	d := 15 * time.Second << min(n, 6)
	d = min(d, 10*time.Minute)
	return d/2 + rand.N(d/2+1)
}

// SandboxConfig maps the settings onto the sandbox's view of the service.
func SandboxConfig(cfg *config.Config) sandbox.Config {
	hidden := []string{cfg.FileStorage.Location}
	// The web-identity token the AWS default chain reads (IRSA projects it
	// into a pod whose ServiceAccount carries a role) grants that role,
	// and with it the artifact bucket: no build may read it.
	if f := os.Getenv("AWS_WEB_IDENTITY_TOKEN_FILE"); filepath.IsAbs(f) {
		hidden = append(hidden, filepath.Dir(f))
	}
	return sandbox.Config{
		DataDir:          cfg.Server.DataDir,
		BuilderDir:       cfg.Git.BuilderDir,
		ConfigDir:        cfg.Dir(),
		SockFileDir:      cfg.Server.SockFileDir,
		StorageLocations: hidden,
		TempDir:          cfg.Server.TempDir,
		WorkDir:          WorkDir(cfg),
		RunAsUser:        cfg.Server.RunAsUser,
		// The one conversion of the build limits: every build command
		// that sets none (the recipes set none) gets these.
		Defaults: sandbox.Limits{
			Timeout:   cfg.Git.BuildTimeout,
			Memory:    int64(cfg.Git.BuildMemory),
			Processes: cfg.Git.BuildProcesses,
			Disk:      int64(cfg.Git.BuildDiskSize),
			Output:    int64(cfg.Git.BuildLogSize),
		},
	}
}

// WorkDir is where a worker's checkouts live (for docs and tests).
func WorkDir(cfg *config.Config) string { return filepath.Join(cfg.Git.BuilderDir, "work") }

// asynqLogger sends asynq's logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }
