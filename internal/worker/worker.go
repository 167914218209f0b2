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
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/build"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/credential"
	"github.com/pkgfleet/pkgfleet/internal/detect"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/jobs"
	"github.com/pkgfleet/pkgfleet/internal/metrics"
	"github.com/pkgfleet/pkgfleet/internal/notify"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/roster"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/pkgfleet/pkgfleet/internal/store"
	"github.com/redis/go-redis/v9"
)

// Options are what a test or main may change beyond the config.
type Options struct {
	Name string // worker name; default host:pid
	// RetryDelay overrides the delay before retry n (tests use tiny ones).
	RetryDelay func(n int) time.Duration
	// TaskCheckInterval is how often an idle worker looks for work.
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often retries that are due are
	// moved back to their queue (asynq's default is 5s).
	DelayedTaskCheckInterval time.Duration
	// Slots, when set, adjusts the build-slot semaphore (tests use short
	// leases).
	Slots func(*semaphore.Semaphore)
	// CancelCheck is how often a running build re-reads its status in
	// case a cancel notification was lost (default 15s).
	CancelCheck time.Duration
	// HeartbeatEvery is how often the worker reports itself to the fleet
	// list (default 10s; it drops off after three missed beats).
	HeartbeatEvery time.Duration
}

// Worker is a configured worker, ready to Run.
type Worker struct {
	cfg     *config.Config
	log     *slog.Logger
	opts    Options
	handler *jobs.Handler
	queues  map[string]int
	tools   map[string]detect.Tool
	slots   int // build slots, capped by the user-namespace limit
	maxNS   int // /proc/sys/user/max_user_namespaces, -1 if unknown
	started time.Time
	ns      *sandbox.Namespaces // nil when the sandbox is unusable
	metrics *metrics.Worker
	ready   atomic.Bool  // serving builds with Redis reachable (readyz)
	opsAddr atomic.Value // string: where serveOps listens
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
  - enable unprivileged user namespaces:
      RHEL/CentOS:     sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d/ to keep it)
      Debian <= 10:    sysctl -w kernel.unprivileged_userns_clone=1
      Ubuntu 24.04:    give pkgfleet-worker an AppArmor profile with "userns," (see docs/sandbox.md),
                       or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0
      Docker:          run with --security-opt seccomp=unconfined --security-opt apparmor=unconfined
      Kubernetes:      seccompProfile: Unconfined and AppArmor unconfined on the worker container
  - install R (r-base-core) and/or Python with the build module (python3-build)
  - or set Git.AllowUnsandboxedGitBuilds = true to build without a sandbox (insecure)`)

// New detects what this worker can build. It fails with ErrNothingToBuild
// when that is nothing.
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
	// The sandbox binds checkouts by symlink-free paths.
	if real, err := filepath.EvalSymlinks(WorkDir(cfg)); err == nil {
		cfg.Git.BuilderDir = filepath.Dir(real)
	}
	scfg := SandboxConfig(cfg)
	if err := sandbox.CleanStale(scfg); err != nil {
		log.Warn("could not remove stale build workspaces", "error", err)
	}
	st, err := store.New(cfg.FileStorage.Location)
	if err != nil {
		return nil, err
	}

	var ns sandbox.Runner // stays nil (not a typed nil) when unusable
	var nsRunner *sandbox.Namespaces
	if r, err := sandbox.New(scfg); err != nil {
		log.Warn("the user-namespace sandbox is unusable", "error", err)
	} else {
		ns, nsRunner = r, r
	}
	direct := sandbox.NewDirect(scfg)
	if cfg.Git.AllowUnsandboxedGitBuilds {
		log.Warn("Git.AllowUnsandboxedGitBuilds = true: a language the sandbox cannot run is built WITHOUT isolation; only build repositories you trust")
	}

	w := &Worker{cfg: cfg, log: log, opts: opts, queues: map[string]int{}, tools: map[string]detect.Tool{}}
	recipes := map[string]build.Recipe{}
	modes := map[string]string{}
	for _, lang := range []string{registry.LangR, registry.LangPython} {
		tool, runner, err := w.detect(ctx, lang, ns, direct)
		if err != nil {
			continue
		}
		w.tools[lang] = tool
		w.queues[jobs.Queue(lang)] = 1
		modes[lang] = runner.Mode()
		switch lang {
		case registry.LangR:
			recipes[lang] = &build.R{Runner: runner, Tool: tool}
		case registry.LangPython:
			recipes[lang] = &build.Python{Runner: runner, Tool: tool}
		}
	}
	w.metrics = metrics.NewWorker(metrics.WorkerState{
		Slots:             func() int { return w.slots },
		NamespacesInUse:   w.namespacesInUse,
		MaxUserNamespaces: sandbox.MaxUserNamespaces,
		SandboxUsable:     nsRunner != nil,
	})
	for _, lang := range []string{registry.LangR, registry.LangPython} {
		w.metrics.LanguageUsable(lang, recipes[lang] != nil)
	}
	if len(recipes) == 0 {
		return nil, ErrNothingToBuild
	}
	w.slots, w.maxNS, w.started, w.ns = cfg.Worker.Concurrency, -1, time.Now().UTC(), nsRunner
	if max, err := sandbox.MaxUserNamespaces(); err == nil {
		w.maxNS = max
	}
	for _, mode := range modes {
		if mode != "user-namespace" {
			continue
		}
		slots, err := roster.CapSlots(cfg.Worker.Concurrency, w.maxNS)
		if err != nil {
			log.Warn("not enough user namespaces for this worker's build slots", "error", err)
		}
		w.slots = slots
		break
	}
	w.handler = &jobs.Handler{
		Store:      st,
		Git:        &git.Client{Policy: git.URLPolicy{AllowFile: cfg.Git.AllowFileURLs}},
		Recipes:    recipes,
		Modes:      modes,
		BuilderDir: cfg.Git.BuilderDir,
		Network:    cfg.Git.BuildNetwork,
		Limits:     scfg.Defaults,
		LogLimit:   cfg.Git.BuildLogSize,
		Worker:     opts.Name,
		Log:        log,
		Metrics:    w.metrics,
	}
	return w, nil
}

func (w *Worker) namespacesInUse() int {
	if w.ns == nil {
		return 0
	}
	return w.ns.InUse()
}

// serveOps serves /metrics, /healthz and /readyz on Worker.MetricsListen
// until ctx ends. It starts before Redis is reached, so that readiness
// says "not ready" while the worker waits for it.
func (w *Worker) serveOps(ctx context.Context, rc *redis.Client) error {
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

// detect probes lang in the sandbox, and unsandboxed only when allowed.
func (w *Worker) detect(ctx context.Context, lang string, ns sandbox.Runner, direct sandbox.Runner) (detect.Tool, sandbox.Runner, error) {
	configured := w.cfg.Server.RVersion
	if lang == registry.LangPython {
		configured = w.cfg.Server.PythonVersion
	}
	probe := func(r sandbox.Runner) (detect.Tool, error) {
		d := &detect.Detector{Runner: r, Log: w.log, TempDir: w.cfg.Server.TempDir}
		if lang == registry.LangR {
			return d.R(ctx, configured)
		}
		return d.Python(ctx, configured)
	}
	var err error = errors.New("the sandbox is unusable")
	if ns != nil {
		var t detect.Tool
		if t, err = probe(ns); err == nil {
			return t, ns, nil
		}
	}
	if !w.cfg.Git.AllowUnsandboxedGitBuilds {
		return detect.Tool{}, nil, err
	}
	t, err := probe(direct)
	if err != nil {
		return detect.Tool{}, nil, err
	}
	w.log.Warn(fmt.Sprintf("Building Git packages for %s WITHOUT a sandbox (Git.AllowUnsandboxedGitBuilds = true)", langName(lang)))
	return t, direct, nil
}

func langName(lang string) string {
	if lang == registry.LangR {
		return "R"
	}
	return "Python"
}

// Tools reports the detected tools by language.
func (w *Worker) Tools() map[string]detect.Tool { return w.tools }

// Run serves builds until ctx ends, then shuts down gracefully: running
// builds get Worker.ShutdownGrace to finish and are requeued after that.
func (w *Worker) Run(ctx context.Context) error {
	rc, err := redisconn.Client(w.cfg.Redis)
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
	w.handler.Registry = registry.New(rc)
	if w.handler.Creds, err = credential.NewStore(rc, w.cfg.Git.CredentialKeyFile); err != nil {
		return err
	}
	hub := notify.New(rc, w.log, semaphore.WakeChannel, jobs.CancelChannel)
	defer hub.Close()
	slots := semaphore.New(rc, hub)
	if w.opts.Slots != nil {
		w.opts.Slots(slots)
	}
	stopping := make(chan struct{})
	w.handler.Slots, w.handler.Events, w.handler.Stopping = slots, hub, stopping
	w.handler.BuildConcurrency = w.cfg.Git.BuildConcurrency
	w.handler.MaxSlotWait = w.cfg.Git.MaxSlotWait
	w.handler.RunTimeout = jobs.RunTimeout(w.cfg)
	w.handler.CancelCheck = w.opts.CancelCheck
	retry := w.opts.RetryDelay
	if retry == nil {
		retry = defaultRetryDelay
	}
	check := w.opts.TaskCheckInterval
	if check == 0 {
		check = 500 * time.Millisecond
	}
	srv := asynq.NewServerFromRedisClient(rc, asynq.Config{
		Concurrency:              w.slots,
		Queues:                   w.queues,
		ShutdownTimeout:          w.cfg.Worker.ShutdownGrace,
		TaskCheckInterval:        check,
		DelayedTaskCheckInterval: w.opts.DelayedTaskCheckInterval,
		RetryDelayFunc:           func(n int, _ error, _ *asynq.Task) time.Duration { return retry(n) },
		Logger:                   asynqLogger{w.log.With("component", "asynq")},
		LogLevel:                 asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(jobs.TypeBuild, w.handler)
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	queues := make([]string, 0, len(w.queues))
	for q := range w.queues {
		queues = append(queues, q)
	}
	w.log.Info("worker ready", "name", w.opts.Name, "queues", strings.Join(queues, ","), "slots", w.slots)
	w.ready.Store(true)
	beatCtx, stopBeat := context.WithCancel(context.WithoutCancel(ctx))
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		roster.Beat(beatCtx, rc, w.log, cmp.Or(w.opts.HeartbeatEvery, 10*time.Second), w.Info)
	}()
	<-ctx.Done()
	w.ready.Store(false)
	// Off the fleet list first: the API stops counting this worker.
	stopBeat()
	<-beating
	w.log.Info("worker stopping: no new builds; running builds may finish", "grace", w.cfg.Worker.ShutdownGrace)
	close(stopping)
	srv.Shutdown()
	// asynq has requeued what did not finish in time; let those handlers
	// record it and release their slots before Redis is closed.
	if !w.handler.Wait(15 * time.Second) {
		w.log.Warn("some builds did not stop in time; their slots return when their leases end")
	}
	return nil
}

// Info is what the worker reports to the fleet list.
func (w *Worker) Info() roster.Worker {
	host, _ := os.Hostname()
	info := roster.Worker{
		Name: w.opts.Name, Host: host, PID: os.Getpid(), Languages: map[string]roster.Language{},
		Slots: w.slots, MaxUserNamespaces: w.maxNS, StartedAt: w.started,
	}
	sandboxed := false
	for lang, t := range w.tools {
		mode := w.handler.Modes[lang]
		info.Languages[lang] = roster.Language{Version: t.Version, Path: t.Path, Sandbox: mode}
		sandboxed = sandboxed || mode == "user-namespace"
	}
	info.Running = w.handler.Running()
	if sandboxed {
		info.NamespacesNeeded = roster.NamespacesPerBuild * w.slots
	}
	if w.ns != nil {
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
	return sandbox.Config{
		DataDir:          cfg.Server.DataDir,
		BuilderDir:       cfg.Git.BuilderDir,
		ConfigDir:        cfg.Dir(),
		SockFileDir:      cfg.Server.SockFileDir,
		StorageLocations: []string{cfg.FileStorage.Location},
		TempDir:          cfg.Server.TempDir,
		RunAsUser:        cfg.Server.RunAsUser,
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
