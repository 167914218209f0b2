package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/build"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/credential"
	"github.com/pkgfleet/pkgfleet/internal/door"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/metrics"
	"github.com/pkgfleet/pkgfleet/internal/notify"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/pkgfleet/pkgfleet/internal/store"
)

// Handler runs build tasks on a worker.
type Handler struct {
	Registry   *registry.Registry
	Store      *store.Store
	Git        *git.Client
	Creds      *credential.Store // opens the builder's credential for the clone only
	Languages  *Languages        // what this worker builds now, and how
	BuilderDir string
	Network    bool
	// PythonIndexURL and RRepositoryURL are the workers' package indexes
	// (Git.PythonIndexURL, Git.RRepositoryURL), behind each build's door
	// (door.go); a builder may override them.
	PythonIndexURL, RRepositoryURL string
	Limits                         sandbox.Limits
	LogLimit                       config.Size
	Worker                         string // this worker's name
	Log                            *slog.Logger
	Metrics                        *metrics.Worker // nil: none

	// Slots limits each builder's concurrent builds across the fleet
	// (nil: no limit): BuildConcurrency for tag builders, one for commit
	// builders. A build waits at most MaxSlotWait (default 24h).
	Slots            *semaphore.Semaphore
	BuildConcurrency int
	MaxSlotWait      time.Duration
	// RunTimeout bounds one attempt once it has its slot (0: none; the
	// asynq task timeout also counts the wait).
	RunTimeout time.Duration
	// Events delivers cancel notifications (CancelChannel); nil: the
	// handler only notices a cancel by re-reading the build's status
	// every CancelCheck (default 15s).
	Events      *notify.Hub
	CancelCheck time.Duration
	// Stopping is closed when the worker shuts down: builds waiting for a
	// slot stop waiting (running ones may finish).
	Stopping <-chan struct{}

	running  atomic.Int32
	inflight sync.WaitGroup
}

// ProcessTask implements asynq.Handler.
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	h.inflight.Add(1)
	defer h.inflight.Done()
	var p Payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.BuildID <= 0 {
		return fmt.Errorf("bad build payload %q: %w", t.Payload(), asynq.SkipRetry)
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	// attempts is corrected from the build record below (see spareRetry).
	attempt, attempts := retried+1, maxRetry+1
	log := h.Log.With("build", p.BuildID, "attempt", attempt)

	// A user's cancel (or a lost slot lease) ends this context; asynq's
	// own (shutdown, deadline) ends it too.
	ctx, cancelBuild := context.WithCancelCause(ctx)
	defer cancelBuild(nil)
	setLease, stopWatch := h.watchCancel(ctx, p.BuildID, cancelBuild)
	defer stopWatch()

	pre, err := h.Registry.Build(ctx, p.BuildID)
	if errors.Is(err, registry.ErrNotFound) || (err == nil && registry.Terminal(pre.Status)) {
		log.Info("build needs no work", "reason", "already finished or canceled")
		return nil
	}
	if err != nil {
		return err // registry unreachable: let asynq retry
	}
	if pre.MaxAttempts > 0 {
		// The record, not asynq's MaxRetry, holds Git.BuildRetries: the
		// task carries a spare retry (see spareRetry). An attempt beyond
		// it (a worker crashed during the last one) is a last one too.
		attempts = max(pre.MaxAttempts, attempt)
	}
	lang, _ := h.Languages.Get(pre.Language)
	bl, berr := h.Registry.Builder(ctx, pre.Source, pre.Builder)
	if berr != nil && !errors.Is(berr, registry.ErrNotFound) {
		return berr // registry unreachable: let asynq retry (never build without a slot)
	}
	if berr == nil && h.Slots != nil {
		lease, err := h.acquire(ctx, pre, bl, attempt)
		switch {
		case errors.Is(err, errSkip) || errors.Is(context.Cause(ctx), errCanceled):
			log.Info("build canceled while it waited for a build slot")
			return nil
		case err != nil && ctx.Err() != nil:
			h.requeued(ctx, pre.ID, "interrupted on worker "+h.Worker+" while waiting for a build slot; requeued")
			return err
		case err != nil:
			return h.finish(ctx, log, pre.ID, attempt, attempts, nil, err)
		}
		if lease != nil {
			defer func() {
				if err := lease.Release(context.WithoutCancel(ctx)); err != nil {
					log.Warn("could not release the build slot", "error", err)
				}
			}()
			setLease(lease)
		}
	}
	if h.RunTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.RunTimeout)
		defer cancel()
	}

	b, err := h.start(ctx, p.BuildID, attempt, lang)
	if errors.Is(err, errSkip) {
		log.Info("build needs no work", "reason", "already finished or canceled")
		return nil
	}
	if err != nil {
		return err // registry unreachable: let asynq retry
	}
	log = log.With("source", b.Source, "builder", b.Builder, "sha", b.SHA)
	log.Info("build started")

	logw := newLogWriter(ctx, h.Registry, b.ID, int64(h.LogLimit), h.LogLimit.String())
	fmt.Fprintf(logw, "==> pkgfleet build %d, attempt %d of %d, on worker %s (%s)\n", b.ID, attempt, attempts, h.Worker, b.Sandbox)
	if b.Sandbox != "user-namespace" {
		fmt.Fprintln(logw, "WARNING: this build runs WITHOUT a sandbox (Git.AllowUnsandboxedGitBuilds = true)")
	}
	h.running.Add(1)
	done := h.Metrics.BuildStarted(b.Language, b.Trigger)
	out, runErr := h.run(ctx, b, lang.Recipe, logw)
	h.running.Add(-1)
	done(h.result(ctx, runErr, attempt, attempts))
	switch {
	case errors.Is(context.Cause(ctx), errCanceled):
		fmt.Fprintln(logw, "==> canceled")
	case backInLine(runErr):
		fmt.Fprintf(logw, "==> the sandbox could not start: %s\n==> back in line; this attempt is not counted\n", runErr)
	case runErr != nil:
		fmt.Fprintf(logw, "==> failed: %s\n", runErr)
	default:
		fmt.Fprintf(logw, "==> succeeded: %s %s\n", out.pkg, out.version)
	}
	logw.Close()
	return h.finish(ctx, log, b.ID, attempt, attempts, out, runErr)
}

// result names how an attempt ended, for the metrics, and counts sandboxes
// that could not start.
func (h *Handler) result(ctx context.Context, runErr error, attempt, attempts int) string {
	switch {
	case errors.Is(context.Cause(ctx), errCanceled):
		return metrics.ResultCanceled
	case runErr == nil:
		return metrics.ResultSucceeded
	}
	if errors.Is(runErr, sandbox.ErrNamespaceLimit) {
		h.Metrics.SandboxFailure("namespace_limit")
	} else if errors.Is(runErr, sandbox.ErrUnavailable) {
		h.Metrics.SandboxFailure("unavailable")
	}
	if attempt < attempts && !errors.Is(runErr, asynq.SkipRetry) || ctx.Err() != nil || backInLine(runErr) {
		return metrics.ResultRetried
	}
	return metrics.ResultFailed
}

// finish records how an attempt ended and tells asynq whether to retry.
// It never overwrites a cancel.
func (h *Handler) finish(ctx context.Context, log *slog.Logger, id int64, attempt, attempts int, out *result, runErr error) error {
	final := context.WithoutCancel(ctx)
	if errors.Is(context.Cause(ctx), errCanceled) {
		log.Info("build canceled; its processes were stopped")
		return nil // no retry
	}
	if runErr == nil {
		_, err := h.Registry.UpdateBuild(final, id, func(b *registry.Build) error {
			if b.Status == registry.StatusCanceled {
				return errSkip
			}
			now := time.Now().UTC()
			b.Status, b.Detail, b.FinishedAt = registry.StatusSucceeded, "", &now
			b.Package, b.Version, b.Artifacts, b.Fetched = out.pkg, out.version, out.artifacts, out.fetched
			return nil
		})
		log.Info("build succeeded", "package", out.pkg, "version", out.version)
		if errors.Is(err, errSkip) {
			return nil
		}
		return err
	}

	if backInLine(runErr) && ctx.Err() == nil {
		_, _ = h.Registry.UpdateBuild(final, id, func(b *registry.Build) error {
			if registry.Terminal(b.Status) {
				return errSkip
			}
			b.Status, b.Attempts = registry.StatusQueued, attempt-1
			b.Detail = "the user-namespace limit was reached on worker " + h.Worker + "; back in line (no attempt spent)"
			return nil
		})
		log.Warn("build could not start: user-namespace limit reached; back in line without spending an attempt", "error", runErr)
		return runErr // IsFailure says no: asynq retries it without counting
	}
	permanent := errors.Is(runErr, asynq.SkipRetry)
	last := attempt >= attempts || permanent
	if errors.Is(context.Cause(ctx), semaphore.ErrLost) {
		runErr = fmt.Errorf("%w (Redis unreachable for too long); another build may have taken the slot", semaphore.ErrLost)
	} else if ctx.Err() != nil && (!last || h.shutdownAbort(ctx)) {
		// Shutdown or lease loss: asynq puts the task back; say so. A
		// shutdown requeue costs no attempt, so even a last attempt
		// runs again.
		h.requeued(ctx, id, "interrupted on worker "+h.Worker+"; requeued")
		return runErr
	}
	_, _ = h.Registry.UpdateBuild(final, id, func(b *registry.Build) error {
		if b.Status == registry.StatusCanceled {
			return nil
		}
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
	log.Warn("build failed", "error", runErr, "final", last)
	if last && !permanent {
		// asynq would retry once more on the spare retry.
		return fmt.Errorf("%w: %w", runErr, asynq.SkipRetry)
	}
	return runErr
}

// shutdownAbort reports whether ctx ended because the worker is stopping
// and its grace period ran out: asynq then requeues the task without
// counting an attempt.
func (h *Handler) shutdownAbort(ctx context.Context) bool {
	select {
	case <-h.Stopping:
		return errors.Is(ctx.Err(), context.Canceled)
	default:
		return false
	}
}

// requeued marks a build queued again, unless it was canceled.
func (h *Handler) requeued(ctx context.Context, id int64, detail string) {
	_, _ = h.Registry.UpdateBuild(context.WithoutCancel(ctx), id, func(b *registry.Build) error {
		if registry.Terminal(b.Status) {
			return errSkip
		}
		b.Status, b.Detail = registry.StatusQueued, detail
		return nil
	})
}

var errSkip = errors.New("skip")

// start marks the build running, or says it needs no work.
func (h *Handler) start(ctx context.Context, id int64, attempt int, lang Language) (*registry.Build, error) {
	b, err := h.Registry.UpdateBuild(ctx, id, func(b *registry.Build) error {
		if registry.Terminal(b.Status) {
			return errSkip // canceled, or a duplicate delivery of a finished build
		}
		now := time.Now().UTC()
		b.Status, b.Detail, b.Attempts = registry.StatusRunning, "", attempt
		b.StartedAt, b.FinishedAt = &now, nil
		b.Worker, b.Sandbox, b.SandboxTier = h.Worker, lang.Sandbox, lang.Tier
		return nil
	})
	if errors.Is(err, registry.ErrNotFound) {
		return nil, errSkip
	}
	return b, err
}

type result struct {
	pkg, version string
	artifacts    []registry.Artifact
	fetched      []door.Fetched
}

func (h *Handler) run(ctx context.Context, b *registry.Build, recipe build.Recipe, logw *logWriter) (*result, error) {
	bl, err := h.Registry.Builder(ctx, b.Source, b.Builder)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return nil, fmt.Errorf("%w: %w", err, asynq.SkipRetry) // deleted meanwhile: retrying cannot help
		}
		return nil, err // Redis unreachable: a retry can
	}
	if recipe == nil {
		return nil, fmt.Errorf("this worker cannot build %s packages", b.Language)
	}
	work := filepath.Join(h.BuilderDir, "work", fmt.Sprintf("build-%d-%d", b.ID, b.Attempts))
	_ = os.RemoveAll(work) // a crashed earlier run of this very attempt
	defer os.RemoveAll(work)
	checkout, dest := filepath.Join(work, "src"), filepath.Join(work, "out")
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(logw, "==> cloning %s at %s (%s)\n", bl.URL, b.SHA, b.Ref)
	cloneCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	sourceDate, err := h.clone(cloneCtx, bl, checkout, b.SHA)
	cancel()
	if err != nil {
		return nil, err
	}
	in := build.Input{
		Checkout: checkout, SubDir: bl.SubDir, Dest: dest, Log: logw,
		Network: h.Network, Limits: h.Limits, SourceDate: sourceDate, BuildVignettes: bl.BuildVignettes,
	}
	d, err := h.doorFor(bl, logw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if d != nil {
		in.Door, in.IndexURL = d, d.BuildURL(0)
	}
	out, err := recipe.Build(ctx, in)
	var fetched []door.Fetched
	if d != nil {
		fetched = d.Fetched()
		for _, f := range fetched {
			fmt.Fprintf(logw, "==> fetched through the door: %s %s (%s, sha256 %s)\n", f.Name, f.Version, f.File, f.SHA256)
		}
	}
	if err != nil {
		return nil, err
	}
	if out.Result.OutputTruncated {
		fmt.Fprintln(logw, "==> note: build output exceeded the output limit and was cut")
	}
	files := make([]store.File, len(out.Files))
	for i, f := range out.Files {
		files[i] = store.File{Path: f.Path, Kind: f.Kind}
	}
	arts, err := h.Store.Put(b.Source, out.Package, b.ID, files)
	if err != nil {
		return nil, err
	}
	for _, a := range arts {
		fmt.Fprintf(logw, "==> stored %s (%d bytes, sha256 %s)\n", a.File, a.Size, a.SHA256)
	}
	return &result{pkg: out.Package, version: out.Version, artifacts: arts, fetched: fetched}, nil
}

// clone checks the commit out with the builder's credential, which lives
// in a masked directory only while git runs; the build never sees it. It
// returns the commit's time, the build's SOURCE_DATE_EPOCH.
func (h *Handler) clone(ctx context.Context, bl *registry.Builder, dir, sha string) (time.Time, error) {
	gc, done, err := h.Creds.GitClient(ctx, h.Git, bl.Credential, h.BuilderDir)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) || errors.Is(err, credential.ErrNoKey) || errors.Is(err, credential.ErrUndecryptable) {
			return time.Time{}, fmt.Errorf("%w: %w", err, asynq.SkipRetry) // retrying cannot help
		}
		return time.Time{}, err // Redis unreachable: a retry can
	}
	defer done()
	if err := gc.Clone(ctx, dir, git.CloneOptions{
		URL: bl.URL, SHA: sha, Depth: bl.CloneDepth, RecurseSubmodules: bl.RecurseSubmodules,
	}); err != nil {
		return time.Time{}, err
	}
	return gc.CommitTime(ctx, dir)
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
// Redis call per line.
type logWriter struct {
	ctx   context.Context
	reg   *registry.Registry
	id    int64
	limit int64
	name  string

	mu      sync.Mutex // guards buf
	flushMu sync.Mutex // keeps appends in write order
	buf     []byte
	done    chan struct{}
	closed  sync.WaitGroup
}

func newLogWriter(ctx context.Context, reg *registry.Registry, id, limit int64, name string) *logWriter {
	w := &logWriter{ctx: context.WithoutCancel(ctx), reg: reg, id: id, limit: limit, name: name, done: make(chan struct{})}
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
				w.flush()
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
	if len(p) > 0 {
		_ = w.reg.AppendLog(w.ctx, w.id, p, w.limit, w.name)
	}
}

// Close flushes what is left and stops the flusher.
func (w *logWriter) Close() {
	close(w.done)
	w.closed.Wait()
}
