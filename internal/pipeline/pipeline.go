// Package pipeline is a worker's build pipeline: for each build task it
// waits for a build slot of the builder, clones the commit with the
// builder's credential, runs the language's recipe, stores the artifacts,
// streams the log and records the outcome, and tells asynq whether to
// retry. New builds it from the settings and the worker's connections.
//
// It does not choose what to build or queue it (internal/queue and its
// callers do), does not isolate builds (the recipes run through
// internal/sandbox) and does not detect toolchains (internal/worker does,
// and hands the result over as Languages).
package pipeline

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/buildlog"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/credential"
	"github.com/pkgfleet/pkgfleet/internal/door"
	"github.com/pkgfleet/pkgfleet/internal/fence"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/lease"
	"github.com/pkgfleet/pkgfleet/internal/metrics"
	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
	"github.com/pkgfleet/pkgfleet/internal/notify"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/recipe"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/pkgfleet/pkgfleet/internal/store"
	"github.com/redis/go-redis/v9"
)

// Deps are what a pipeline runs on: the settings and the worker's
// connections. New reads them and changes none of them.
type Deps struct {
	Config *config.Config
	// Redis holds the registry, the credentials and the build slots.
	Redis redis.UniversalClient
	// Events delivers cancels (queue.CancelChannel) and slot wake-ups
	// (semaphore.WakeChannel) from Redis.
	Events *notify.Hub
	// Languages is what this worker builds now, and how; the worker
	// changes it while builds run (tests put a fake recipe in it).
	Languages *Languages
	Worker    string // this worker's name
	// Store keeps the artifacts; nil: the one the settings choose.
	Store   store.Artifacts
	Log     *slog.Logger
	Metrics *metrics.Worker // nil: none
	// Stopping is closed when the worker shuts down: builds waiting for
	// a slot stop waiting (running ones may finish).
	Stopping <-chan struct{}
	// Slots, when set, adjusts the build-slot semaphore (tests use short
	// leases).
	Slots func(*semaphore.Semaphore)
	// FenceAfter is T: a running build whose hold went unconfirmed this
	// long stops (default fence.DefaultAfter, 20s). Keep it below the
	// slot's HoldLease and asynq's 30s task lease.
	FenceAfter time.Duration
	// ParkRecheck is how long a parked build stays out of its queue
	// before it checks again by itself (default 1m); a release or a sweep
	// brings it back sooner.
	ParkRecheck time.Duration
	// SweepEvery is how often Sweep looks for parked builds that may take
	// a free slot (default 15s).
	SweepEvery time.Duration
	// Durability makes an attempt's begin (with its slot), each fence
	// confirmation and a succeeded record survive a Redis failover before
	// they count (redisconn.DurabilityOf; zero without Sentinel).
	Durability redisconn.Durability
}

// Pipeline runs build tasks on a worker; it is an asynq.Handler.
type Pipeline struct {
	registry   *registry.Registry
	store      store.Artifacts
	logs       *buildlog.Logs // moves a finished build's log into the store
	git        *git.Client
	objects    *git.ObjectCache  // nil: Worker.ObjectCacheSize = 0
	creds      *credential.Store // opens the builder's credential for the clone only
	languages  *Languages
	builderDir string
	network    bool
	// pythonIndexURL and rRepositoryURL are the workers' package indexes
	// (Git.PythonIndexURL, Git.RRepositoryURL), behind each build's door
	// (door.go); a builder may override them.
	pythonIndexURL, rRepositoryURL string
	logLimit                       config.Size
	worker                         string
	log                            *slog.Logger
	metrics                        *metrics.Worker

	// slots limits each builder's concurrent builds across the fleet:
	// BuildConcurrency for tag builders, one for commit builders. A build
	// waits at most maxSlotWait.
	slots       *queue.Slots
	maxSlotWait time.Duration
	// runTimeout bounds one attempt once it has its slot (the asynq task
	// timeout also counts the wait).
	runTimeout  time.Duration
	events      *notify.Hub
	stopping    <-chan struct{}
	fenceAfter  time.Duration
	parkRecheck time.Duration
	sweepEvery  time.Duration
	// lateWrites is how long an attempt keeps trying to record its end
	// while Redis is unreachable.
	lateWrites time.Duration
	rdb        redis.UniversalClient
	durability redisconn.Durability

	running  atomic.Int32
	inflight sync.WaitGroup
}

// New builds a worker's pipeline from the settings and its connections.
func New(d Deps) (*Pipeline, error) {
	cfg := d.Config
	if cfg == nil || d.Redis == nil || d.Events == nil || d.Languages == nil || d.Log == nil {
		return nil, errors.New("pipeline: Config, Redis, Events, Languages and Log are required")
	}
	st := d.Store
	if st == nil {
		var err error
		if st, err = store.New(context.Background(), cfg); err != nil {
			return nil, err
		}
	}
	creds, err := credential.FromConfig(d.Redis, cfg.Git)
	if err != nil {
		return nil, err
	}
	slots := semaphore.New(d.Redis)
	if d.Slots != nil {
		d.Slots(slots)
	}
	fenceAfter := cmp.Or(d.FenceAfter, fence.DefaultAfter)
	if err := lease.CheckFence(fenceAfter, cmp.Or(slots.HoldLease, semaphore.DefaultHoldLease)); err != nil {
		// A build must stop before its slot can go to another attempt.
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	if d.Durability.Replicas > 0 {
		hold := cmp.Or(slots.HoldLease, semaphore.DefaultHoldLease)
		if err := lease.CheckDurability(fenceAfter, hold, d.Durability.Replicas, d.Durability.Timeout); err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
	}
	outbound, err := cfg.Outbound()
	if err != nil {
		return nil, err
	}
	reg := registry.New(d.Redis)
	return &Pipeline{
		registry: reg,
		store:    st,
		logs:     &buildlog.Logs{Registry: reg, Store: st},
		git: &git.Client{Policy: git.URLPolicy{AllowFile: cfg.Git.AllowFileURLs},
			Net: outbound, MaxFetchSize: int64(cfg.Git.MaxCloneSize)},
		objects:        objectCache(cfg),
		creds:          creds,
		languages:      d.Languages,
		builderDir:     cfg.Git.BuilderDir,
		network:        cfg.Git.BuildNetwork,
		pythonIndexURL: cfg.Git.PythonIndexURL,
		rRepositoryURL: cfg.Git.RRepositoryURL,
		logLimit:       cfg.Git.BuildLogSize,
		worker:         d.Worker,
		log:            d.Log,
		metrics:        d.Metrics,
		slots: &queue.Slots{Sema: slots, Registry: reg, Inspector: asynq.NewInspectorFromRedisClient(d.Redis),
			BuildConcurrency: cfg.Git.BuildConcurrency},
		maxSlotWait: cmp.Or(cfg.Git.MaxSlotWait, 24*time.Hour),
		runTimeout:  queue.RunTimeout(cfg),
		events:      d.Events,
		stopping:    d.Stopping,
		fenceAfter:  fenceAfter,
		parkRecheck: cmp.Or(d.ParkRecheck, time.Minute),
		sweepEvery:  cmp.Or(d.SweepEvery, 15*time.Second),
		lateWrites:  2 * time.Minute,
		rdb:         d.Redis,
		durability:  d.Durability,
	}, nil
}

// objectCache is the worker's object cache (internal/git's objcache.go)
// that the settings ask for, below Git.BuilderDir, which no build sees.
func objectCache(cfg *config.Config) *git.ObjectCache {
	if cfg.Worker.ObjectCacheSize <= 0 {
		return nil
	}
	return git.NewObjectCache(filepath.Join(cfg.Git.BuilderDir, "objcache"), int64(cfg.Worker.ObjectCacheSize))
}

// ObjectCache reads the figures of the worker's object cache.
func (p *Pipeline) ObjectCache() git.CacheStats { return p.objects.Stats() }

// durable is the durability step (redisconn.Durability) after a write
// that must survive a failover.
func (p *Pipeline) durable(ctx context.Context) error { return p.durability.Wait(ctx, p.rdb) }

// ProcessTask implements asynq.Handler.
func (p *Pipeline) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p.inflight.Add(1)
	defer p.inflight.Done()
	var task queue.Payload
	if err := json.Unmarshal(t.Payload(), &task); err != nil || task.BuildID <= 0 {
		return fmt.Errorf("bad build payload %q: %w", t.Payload(), asynq.SkipRetry)
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	// attempts is corrected from the build record (see queue.spareRetry).
	return p.process(ctx, task.BuildID, retried+1, maxRetry+1)
}

// process runs attempt of build id, of attempts as asynq counts them, and
// says whether asynq should retry: nil (done, or canceled), an error
// wrapping asynq.SkipRetry (failed for good), a *parkedError (back in
// line without a slot), or another error (retry).
func (p *Pipeline) process(ctx context.Context, id int64, attempt, attempts int) error {
	picked := time.Now()
	log := p.log.With("build", id, "attempt", attempt)
	// A build parks on one of asynq's retries; with none left it waits
	// for its slot here.
	canPark := attempt < attempts

	// A user's cancel or a lost hold ends this context; asynq's own
	// (shutdown, deadline) ends it too.
	ctx, cancelBuild := context.WithCancelCause(ctx)
	defer cancelBuild(nil)
	defer p.watchCancel(ctx, id, cancelBuild)()

	// One script reads the build and its builder (its slots, then its
	// remote, credential and sub-directory for the build) and, unless the
	// build is finished, begins this attempt: from here on, every earlier
	// attempt's writes are refused.
	pre, bl, at, err := p.registry.BeginAttempt(ctx, id, attempt, p.worker)
	if errors.Is(err, registry.ErrNotFound) || (err == nil && registry.Terminal(pre.Status)) {
		log.Info("build needs no work", "reason", "already finished or canceled")
		return nil
	}
	if err != nil {
		return err // registry unreachable: let asynq retry (never build without a slot)
	}
	if pre.MaxAttempts > 0 {
		// The record, not asynq's MaxRetry, holds Git.BuildRetries: the
		// task carries a spare retry (see queue.spareRetry). An attempt beyond
		// it (a worker crashed during the last one) is a last one too.
		attempts = max(pre.MaxAttempts, attempt)
	}
	lang, _ := p.languages.Get(pre.Language)
	gone := bl == nil
	log = log.With("attempt_token", at.Token)

	var lease *semaphore.Lease
	if !gone {
		lease, err = p.acquire(ctx, log, at, pre, bl, canPark)
		var parked *parkedError
		switch {
		case errors.Is(err, errSkip) || errors.Is(context.Cause(ctx), errCanceled):
			log.Info("build canceled while it waited for a build slot")
			return nil
		case errors.As(err, &parked), errors.Is(err, registry.ErrSuperseded):
			return err
		case err != nil && ctx.Err() != nil:
			p.requeued(ctx, log, at, "interrupted on worker "+p.worker+" while waiting for a build slot; requeued")
			return err
		case err != nil:
			return p.finish(ctx, log, at, attempts, nil, err, nil)
		}
		defer p.release(ctx, log, lease)
	}
	// The attempt's token and its slot must outlive a failover before it
	// builds: else a new master could grant the slot to another attempt.
	if err := p.durable(ctx); err != nil {
		log.Warn("attempt not begun: Redis did not confirm it durable; asynq retries it", "error", err)
		return err
	}
	defer p.hold(ctx, at, lease, cancelBuild)()
	ctx, cancelRun := context.WithTimeout(ctx, p.runTimeout)
	defer cancelRun()

	// The log's first lines go with the record's start.
	header := fmt.Sprintf("==> pkgfleet build %d, attempt %d of %d (token %d), on worker %s (%s)\n", id, attempt, attempts, at.Token, p.worker, lang.Sandbox)
	if lang.Sandbox != "user-namespace" {
		header += "WARNING: this build runs WITHOUT a sandbox (Git.AllowUnsandboxedGitBuilds = true)\n"
	}
	b, err := p.start(ctx, log, at, lang, picked, []byte(header))
	if errors.Is(err, errSkip) {
		log.Info("build needs no work", "reason", "already finished or canceled")
		return nil
	}
	if err != nil {
		return err // registry unreachable or superseded: let asynq decide
	}
	log = log.With("source", b.Source, "builder", b.Builder, "sha", b.SHA)
	log.Info("build started")

	logw := newLogWriter(ctx, log, p.registry, at, int64(p.logLimit), p.logLimit.String())
	p.running.Add(1)
	done := p.metrics.BuildStarted(b.Language, b.Trigger)
	var out *result
	var runErr error
	if gone {
		// Deleted meanwhile: retrying cannot help.
		runErr = fmt.Errorf("git-builder %q in source %q %w: %w", pre.Builder, pre.Source, registry.ErrNotFound, asynq.SkipRetry)
	} else {
		out, runErr = p.run(ctx, b, bl, at, lang.Recipe, logw)
	}
	p.running.Add(-1)
	done(p.result(ctx, runErr, attempt, attempts))
	var lost *fence.StoppedError
	switch {
	case errors.Is(context.Cause(ctx), errCanceled):
		fmt.Fprintln(logw, "==> canceled")
	case errors.As(context.Cause(ctx), &lost):
		fmt.Fprintf(logw, "==> stopped on worker %s: %s\n", p.worker, lost)
	case backInLine(runErr):
		fmt.Fprintf(logw, "==> the sandbox could not start: %s\n==> back in line; this attempt is not counted\n", runErr)
	case runErr != nil:
		fmt.Fprintf(logw, "==> failed: %s\n", runErr)
	default:
		fmt.Fprintf(logw, "==> succeeded: %s %s\n", out.pkg, out.version)
	}
	// The log's last lines go with the record's end.
	return p.finish(ctx, log, at, attempts, out, runErr, logw.Detach())
}

// result names how an attempt ended, for the metrics, and counts sandboxes
// that could not start.
func (p *Pipeline) result(ctx context.Context, runErr error, attempt, attempts int) string {
	switch {
	case errors.Is(context.Cause(ctx), errCanceled):
		return metrics.ResultCanceled
	case runErr == nil:
		return metrics.ResultSucceeded
	}
	if errors.Is(runErr, sandbox.ErrNamespaceLimit) {
		p.metrics.SandboxFailure("namespace_limit")
	} else if errors.Is(runErr, sandbox.ErrUnavailable) {
		p.metrics.SandboxFailure("unavailable")
	}
	if attempt < attempts && !errors.Is(runErr, asynq.SkipRetry) || ctx.Err() != nil || backInLine(runErr) {
		return metrics.ResultRetried
	}
	return metrics.ResultFailed
}

// finish records how an attempt ended, with the log's last lines (tail),
// and tells asynq whether to retry. It never overwrites a cancel, and
// writes nothing once a newer attempt took over.
func (p *Pipeline) finish(ctx context.Context, log *slog.Logger, at registry.Attempt, attempts int, out *result, runErr error, tail []byte) error {
	final := context.WithoutCancel(ctx)
	attempt := at.Number
	if errors.Is(context.Cause(ctx), errCanceled) {
		p.appendLog(final, log, at, tail)
		log.Info("build canceled; its processes were stopped")
		return nil // no retry
	}
	var lost *fence.StoppedError
	if errors.As(context.Cause(ctx), &lost) {
		p.appendLog(final, log, at, tail)
		return p.stopped(ctx, log, at, lost)
	}
	if runErr == nil {
		recordStart := out.recordStart
		b, err := p.writeLast(final, log, at, out.source, out.pkg, tail, func(b *registry.Build) error {
			if b.Status == registry.StatusCanceled {
				return errSkip
			}
			now := time.Now().UTC()
			b.Status, b.Detail, b.FinishedAt = registry.StatusSucceeded, "", &now
			b.Package, b.Version, b.Artifacts, b.Fetched = out.pkg, out.version, out.artifacts, out.fetched
			b.Describe = out.describe
			b.Warnings = out.warnings
			b.Check = out.check
			b.Phases = out.phases
			b.SetPhase(registry.PhaseRecord, time.Since(recordStart))
			return nil
		})
		if err != nil {
			// Nothing refers to this attempt's files: the record that
			// would have published them was refused or never written.
			_ = p.store.Discard(final, out.source, out.pkg, at.Build, at.Token, out.artifacts)
		}
		if errors.Is(err, errSkip) {
			return nil
		}
		if errors.Is(err, registry.ErrSuperseded) {
			p.metrics.Fenced(fence.ReasonSuperseded)
			return err
		}
		if err == nil {
			// Acknowledged to asynq (the task is done) only once it
			// would survive a failover; else asynq retries, and the next
			// attempt finds the record finished, or builds again.
			if err = p.durable(final); err != nil {
				log.Warn("build recorded succeeded, but Redis did not confirm it durable; asynq retries it", "error", err)
				return err
			}
			p.metrics.Phases(b.Language, b.Phases)
			log.Info("build succeeded", "package", out.pkg, "version", out.version)
			if b.Log == nil {
				p.moveLog(final, log, at.Build)
			}
		}
		return err
	}

	if backInLine(runErr) && ctx.Err() == nil {
		_, _ = p.writeEnd(final, log, at, tail, func(b *registry.Build) error {
			if registry.Terminal(b.Status) {
				return errSkip
			}
			b.Status, b.Attempts = registry.StatusQueued, attempt-1
			b.Detail = "the user-namespace limit was reached on worker " + p.worker + "; back in line (no attempt spent)"
			return nil
		})
		log.Warn("build could not start: user-namespace limit reached; back in line without spending an attempt", "error", runErr)
		return runErr // IsFailure says no: asynq retries it without counting
	}
	permanent := errors.Is(runErr, asynq.SkipRetry)
	last := attempt >= attempts || permanent
	if ctx.Err() != nil && (!last || p.shutdownAbort(ctx)) {
		// Shutdown or lease loss: asynq puts the task back; say so. A
		// shutdown requeue costs no attempt, so even a last attempt
		// runs again.
		p.appendLog(final, log, at, tail)
		p.requeued(ctx, log, at, "interrupted on worker "+p.worker+"; requeued")
		return runErr
	}
	_, werr := p.writeEnd(final, log, at, tail, func(b *registry.Build) error {
		if b.Status == registry.StatusCanceled {
			return errSkip
		}
		// This attempt's fetches, even though it failed: nil when it
		// failed before its door opened.
		b.Fetched = out.fetchedOrNil()
		b.Check = out.checkOrNil()
		if last {
			now := time.Now().UTC()
			b.Status, b.FinishedAt = registry.StatusFailed, &now
			b.Detail = reason(runErr)
		} else {
			b.Status = registry.StatusQueued
			b.Detail = fmt.Sprintf("attempt %d of %d failed, will retry: %s", attempt, attempts, reason(runErr))
		}
		return nil
	})
	if errors.Is(werr, registry.ErrSuperseded) {
		return werr
	}
	log.Warn("build failed", "error", runErr, "final", last)
	if last && werr == nil {
		p.moveLog(final, log, at.Build)
	}
	if last && !permanent {
		// asynq would retry once more on the spare retry.
		return fmt.Errorf("%w: %w", runErr, asynq.SkipRetry)
	}
	return runErr
}

// moveLog moves a build's log, now that it finished, out of Redis into
// the store. A failure costs only memory until the API's retention pass
// moves it (internal/retention), so it is logged, not returned.
func (p *Pipeline) moveLog(ctx context.Context, log *slog.Logger, id int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if _, err := p.logs.Move(ctx, id); err != nil {
		log.Warn("build log not moved into the store; the retention pass will", "error", err)
	}
}

// shutdownAbort reports whether ctx ended because the worker is stopping
// and its grace period ran out: asynq then requeues the task without
// counting an attempt.
func (p *Pipeline) shutdownAbort(ctx context.Context) bool {
	select {
	case <-p.stopping:
		return errors.Is(ctx.Err(), context.Canceled)
	default:
		return false
	}
}

// requeued marks a build queued again, unless it was canceled or a newer
// attempt took over.
func (p *Pipeline) requeued(ctx context.Context, log *slog.Logger, at registry.Attempt, detail string) {
	_, _ = p.write(context.WithoutCancel(ctx), log, at, func(b *registry.Build) error {
		if registry.Terminal(b.Status) {
			return errSkip
		}
		b.Status, b.Detail = registry.StatusQueued, detail
		return nil
	})
}

var errSkip = errors.New("skip")

// start marks the build running and writes header to its log, or says it
// needs no work. It records how long the build was queued (first attempt
// only) and waited for its slot.
func (p *Pipeline) start(ctx context.Context, log *slog.Logger, at registry.Attempt, lang Language, picked time.Time, header []byte) (*registry.Build, error) {
	b, err := p.writeWithLog(ctx, log, at, header, func(b *registry.Build) error {
		if registry.Terminal(b.Status) {
			return errSkip // canceled, or a duplicate delivery of a finished build
		}
		now := time.Now().UTC()
		if b.Attempts == 0 {
			b.Phases = nil
			queued := picked.UTC()
			if b.WaitingSince != nil {
				queued = *b.WaitingSince
			}
			b.SetPhase(registry.PhaseQueued, max(queued.Sub(b.CreatedAt), 0))
		}
		if b.WaitingSince != nil {
			b.SetPhase(registry.PhaseWaiting, max(now.Sub(*b.WaitingSince), 0))
			b.WaitingSince = nil
		}
		b.Status, b.Detail, b.Attempts = registry.StatusRunning, "", at.Number
		b.StartedAt, b.FinishedAt = &now, nil
		b.Worker, b.Sandbox, b.SandboxTier = p.worker, lang.Sandbox, lang.Tier
		return nil
	})
	if errors.Is(err, registry.ErrNotFound) {
		return nil, errSkip
	}
	return b, err
}

type result struct {
	source, pkg, version string
	describe             string
	artifacts            []registry.Artifact
	fetched              []door.Fetched
	warnings             []string
	check                *registry.Check
	phases               []registry.Phase // the record's, with this attempt's added
	recordStart          time.Time
}

// checkOrNil is the attempt's check verdict; r may be nil.
func (r *result) checkOrNil() *registry.Check {
	if r == nil {
		return nil
	}
	return r.check
}

// fetchedOrNil is what the attempt fetched through its door; r may be nil
// (the attempt ended before it built).
func (r *result) fetchedOrNil() []door.Fetched {
	if r == nil {
		return nil
	}
	return r.fetched
}

// run clones b's commit from builder bl, builds it with rc and stores
// the artifacts in attempt at's own directory of the store.
func (p *Pipeline) run(ctx context.Context, b *registry.Build, bl *registry.Builder, at registry.Attempt, rc recipe.Recipe, logw *logWriter) (*result, error) {
	if rc == nil {
		return nil, fmt.Errorf("this worker cannot build %s packages", b.Language)
	}
	// The attempt's own work directory: the checkout and the results
	// (Dest) apart, or only the results when the recipe needs no
	// checkout. Every directory made here costs a mkdir and an rmdir.
	nc, ok := rc.(NoCheckout)
	clone := !ok || !nc.NoCheckout()
	work := filepath.Join(p.builderDir, "work", fmt.Sprintf("build-%d-%d", b.ID, at.Token))
	if err := mkdirFresh(work); err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	checkout, dest := filepath.Join(work, "src"), work
	if clone {
		dest = filepath.Join(work, "out")
		if err := os.Mkdir(dest, 0o755); err != nil {
			return nil, err
		}
	}
	phases := &registry.Build{Phases: b.Phases}
	var co git.Checkout
	if clone {
		fmt.Fprintf(logw, "==> cloning %s at %s (%s)\n", bl.URL, b.SHA, b.Ref)
		began := time.Now()
		cloneCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		var err error
		co, err = p.clone(cloneCtx, bl, checkout, b)
		cancel()
		phases.SetPhase(registry.PhaseClone, time.Since(began))
		if err != nil {
			return nil, err
		}
		if co.Describe != "" {
			fmt.Fprintf(logw, "==> git describe: %s\n", co.Describe)
		}
	}
	sourceDate := co.Time
	in := recipe.Input{
		Checkout: checkout, SubDir: bl.SubDir, Dest: dest, Log: logw,
		Network: p.network, SourceDate: sourceDate, BuildVignettes: bl.BuildVignettes,
		// A stalled worker cannot fence its build; the sandbox's helper
		// then stops it after the same T.
		DeadMan: p.fenceAfter,
		Check:   bl.Check, CheckCommand: bl.CheckCommand,
	}
	if bl.Language == registry.LangR {
		binary, err := p.buildsBinary(ctx, bl)
		if err != nil {
			return nil, err
		}
		in.Binary = binary
		// The build's R library, where the binary's and the check's runs
		// install the package's dependencies: beside the checkout and the
		// results, removed with the work directory.
		in.Library = filepath.Join(work, "library")
		if err := os.Mkdir(in.Library, 0o755); err != nil {
			return nil, err
		}
	}
	d, err := p.doorFor(bl, in.Binary, logw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if d != nil {
		in.Door, in.IndexURL = d, d.BuildURL(0)
	}
	out, err := rc.Build(ctx, in)
	var fetched []door.Fetched
	if d != nil {
		var envs []string
		if e, ok := rc.(Environments); ok {
			envs = e.Environments()
		}
		fetched = d.Fetched(envs...)
		for _, f := range fetched {
			fmt.Fprintf(logw, "==> fetched through the door: %s %s (%s, sha256 %s)%s\n", f.Name, f.Version, f.File, f.SHA256, forEnvironments(f.Environments))
		}
	}
	if err != nil {
		// A failed build still says what it fetched (provenance).
		return &result{fetched: fetched}, err
	}
	phases.SetPhase(registry.PhaseSandboxStart, out.Timing.SandboxStart)
	phases.SetPhase(registry.PhaseBuild, out.Timing.Build)
	phases.SetPhase(registry.PhaseChecks, out.Timing.Checks)
	if out.Check != nil {
		phases.SetPhase(registry.PhaseCheck, out.Timing.Check)
		p.metrics.Check(out.Check.Verdict)
		if bl.CheckGates && out.Check.Gates() {
			return &result{fetched: fetched, check: out.Check}, gated(out.Check)
		}
	}
	if out.Result.OutputTruncated {
		fmt.Fprintln(logw, "==> note: build output exceeded the output limit and was cut")
	}
	fmt.Fprintf(logw, "==> storing %d files\n", len(out.Artifacts))
	began := time.Now()
	arts, err := p.store.Put(ctx, b.Source, out.Package, b.ID, at.Token, dest, out.Artifacts)
	if err != nil {
		return &result{fetched: fetched}, err
	}
	stored := time.Now()
	phases.SetPhase(registry.PhaseStore, stored.Sub(began))
	for _, a := range arts {
		fmt.Fprintf(logw, "==> stored %s (%d bytes, sha256 %s)\n", a.File, a.Size, a.SHA256)
	}
	return &result{source: b.Source, pkg: out.Package, version: out.Version, describe: co.Describe, artifacts: arts, fetched: fetched,
		warnings: out.Warnings, check: out.Check, phases: phases.Phases, recordStart: stored}, nil
}

// gated marks check c as holding its build back (check_gates) and says
// why in one line. A WARNING or ERROR would say the same on every attempt,
// so it is final; a check that could not run to its end may run again.
func gated(c *registry.Check) error {
	c.Gated = true
	err := fmt.Errorf("%s (check_gates: not published)", c.Summary)
	if c.Verdict != registry.CheckFailed {
		err = fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return err
}

// mkdirFresh makes dir, empty: mkdir first, as dir is almost always new
// (each attempt has its own); its parents when they are missing; and
// whatever a crashed run of this very attempt left there is removed.
func mkdirFresh(dir string) error {
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return err
		}
		err = os.Mkdir(dir, 0o755)
	}
	if errors.Is(err, fs.ErrExist) {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		err = os.Mkdir(dir, 0o755)
	}
	return err
}

// Environments is implemented by a recipe whose build makes environments
// that each install requirements through the door: it names them in the
// order the build makes them, for the provenance (door.Fetched).
type Environments interface{ Environments() []string }

func forEnvironments(envs []string) string {
	if len(envs) == 0 {
		return ""
	}
	return " for the " + strings.Join(envs, " and ")
}

// NoCheckout is implemented by a recipe that needs no checkout: the
// pipeline then skips the clone. Only the no-op benchmark's recipe does, to
// measure the pipeline's own cost without git's.
type NoCheckout interface{ NoCheckout() bool }

// clone checks the commit out with the builder's credential, which lives
// in a masked directory only while git runs; the build never sees it. It
// returns the commit's time (the build's SOURCE_DATE_EPOCH) and its
// describe.
func (p *Pipeline) clone(ctx context.Context, bl *registry.Builder, dir string, b *registry.Build) (git.Checkout, error) {
	gc, done, err := p.creds.GitClient(ctx, p.git, bl.Credential, bl.URL, p.builderDir)
	if err != nil {
		var refused *registry.ValidationError // the credential is not for this URL
		if errors.Is(err, registry.ErrNotFound) || errors.Is(err, credential.ErrNoKey) || errors.Is(err, credential.ErrUndecryptable) || errors.As(err, &refused) {
			return git.Checkout{}, fmt.Errorf("%w: %w", err, asynq.SkipRetry) // retrying cannot help
		}
		return git.Checkout{}, err // Redis unreachable: a retry can
	}
	defer done()
	// The build's ref names a release when it is a tag of the remote (the
	// checkout has them all); a tags builder's always does. Only Python
	// packages take their version from git (setuptools-scm, hatch-vcs …):
	// an R package's is its DESCRIPTION's, so its checkout needs no history.
	opts := git.CloneOptions{URL: bl.URL, SHA: b.SHA, Depth: bl.CloneDepth, RecurseSubmodules: bl.RecurseSubmodules,
		Ref: b.Ref, RefIsTag: bl.BuildTrigger == registry.TriggerTags}
	if b.Language == registry.LangPython {
		opts.History = p.historyDir(bl)
	} else {
		// From the worker's cache of the remote, shared by the builders
		// that reach it with the same credential.
		opts.FilesOnly, opts.Cache, opts.CacheKey = true, p.objects, bl.Credential
	}
	when, err := gc.Clone(ctx, dir, opts)
	if err != nil {
		// The build's record and log are the API's to show: they get
		// git.Explain's message, the worker's log git's own text.
		p.log.Warn("clone failed", "build", b.ID, "error", err)
		var refused *netpolicy.RefusedError
		final := errors.As(err, &refused) || errors.Is(err, git.ErrTooLarge)
		err = fmt.Errorf("clone %s at %s: %w", bl.URL, b.SHA, git.Explained(err))
		if final {
			err = fmt.Errorf("%w: %w", err, asynq.SkipRetry) // a retry meets the same policy or size
		}
	}
	return when, err
}

// historyDir is builder bl's history repository on this worker, kept
// across its builds (internal/git's history.go): one per builder and
// URL, as another builder's credential may not read the same remote.
func (p *Pipeline) historyDir(bl *registry.Builder) string {
	sum := sha256.Sum256([]byte(bl.Key() + "\n" + bl.URL))
	return filepath.Join(p.builderDir, "history", hex.EncodeToString(sum[:12]))
}

func reason(err error) string {
	s := err.Error()
	s = strings.TrimSuffix(s, ": "+asynq.SkipRetry.Error())
	if len(s) > 4000 {
		s = s[:4000] + " …"
	}
	return s
}

// logWriter streams build output into the registry: it batches writes and
// flushes every quarter second, so `logs --follow` sees progress without a
// Redis call per line; what is left at the end goes with the attempt's
// last record write (Detach). Its appends are fenced by attempt: once a newer
// attempt took over, it writes nothing more (and says so once).
type logWriter struct {
	ctx   context.Context
	log   *slog.Logger
	reg   *registry.Registry
	at    registry.Attempt
	limit int64
	name  string

	mu      sync.Mutex // guards buf
	flushMu sync.Mutex // keeps appends in write order; guards refused, failed
	buf     []byte
	done    chan struct{}
	closed  sync.WaitGroup

	refused bool // a newer attempt took over: append nothing more
	failed  bool // an append failed (Redis unreachable) and was logged
}

func newLogWriter(ctx context.Context, log *slog.Logger, reg *registry.Registry, at registry.Attempt, limit int64, name string) *logWriter {
	w := &logWriter{ctx: context.WithoutCancel(ctx), log: log, reg: reg, at: at, limit: limit, name: name, done: make(chan struct{})}
	w.closed.Add(1)
	go func() {
		defer w.closed.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				w.flush()
			case <-w.done:
				return
			}
		}
	}()
	return w
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf = append(w.buf, p...)
	full := len(w.buf) >= 64<<10
	w.mu.Unlock()
	if full {
		w.flush()
	}
	return len(p), nil
}

func (w *logWriter) flush() {
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	p := w.buf
	w.buf = nil
	w.mu.Unlock()
	if len(p) == 0 || w.refused {
		return
	}
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	err := w.reg.AppendLogAs(ctx, w.at, p, w.limit, w.name)
	switch {
	case errors.Is(err, registry.ErrSuperseded):
		w.refused = true
		w.log.Warn("stale write refused: log lines dropped", "attempt_token", w.at.Token, "reason", err.Error())
	case err != nil && !w.failed:
		w.failed = true
		w.log.Warn("could not append to the build log; lines are dropped while Redis is unreachable", "error", err)
	case err == nil:
		w.failed = false
	}
}

// Detach stops the flusher and returns what it has not written, for the
// attempt's last record write to carry (nil once a newer attempt took
// over). Nothing may be written to w afterwards.
func (w *logWriter) Detach() []byte {
	close(w.done)
	w.closed.Wait()
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.buf
	w.buf = nil
	if w.refused {
		return nil
	}
	return p
}
