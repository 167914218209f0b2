package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/detect"
	"github.com/pkgfleet/pkgfleet/internal/pipeline"
	"github.com/pkgfleet/pkgfleet/internal/recipe"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/roster"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// languages are the languages a worker probes, in probe order.
var languages = []string{registry.LangR, registry.LangPython}

// maxReprobeWait is where the re-probe backoff stops growing.
const maxReprobeWait = 5 * time.Minute

// probeSandbox sets the sandbox up once, as New does, and logs its tier.
// It reports whether the sandbox is usable now.
func (w *Worker) probeSandbox(log *slog.Logger) bool {
	ns, err := sandbox.New(w.scfg)
	w.mu.Lock()
	w.ns, w.sandboxErr = ns, err
	w.limitRefused = w.limitRefused || errors.Is(err, sandbox.ErrNamespaceLimit)
	w.mu.Unlock()
	if err != nil {
		log.Warn("the sandbox is unusable", "error", err)
		log.Info("sandbox tier", "tier", sandbox.TierNone, "gives_up", givesUp(nil))
		w.metrics.SandboxTier(string(sandbox.TierNone), false)
		return false
	}
	log.Info("sandbox tier", "tier", ns.Tier(), "gives_up", givesUp(ns))
	w.metrics.SandboxTier(string(ns.Tier()), true)
	return true
}

// checkStore checks that the artifact store is reachable and writable,
// and reports whether it is. While it is not, the worker takes no builds
// (queuesAndSlots) and says why in one line, in its log and the fleet
// list; re-probes check it again.
func (w *Worker) checkStore(ctx context.Context, log *slog.Logger) bool {
	w.mu.Lock()
	st := w.store
	w.mu.Unlock()
	err := st.Check(ctx)
	w.mu.Lock()
	w.storeErr = err
	w.mu.Unlock()
	if err != nil {
		log.Error("the worker refuses builds: its artifact store failed its check", "error", err)
		return false
	}
	log.Info("artifact store", "store", st.String())
	return true
}

// givesUp says in words what builds give up in ns's tier (nil: no
// sandbox).
func givesUp(ns *sandbox.Namespaces) string {
	if ns == nil {
		return sandbox.TierNone.GivesUp()
	}
	return ns.Tier().GivesUp()
}

// probeLanguage detects lang in the sandbox, and unsandboxed only when
// allowed, and makes it buildable when that works. It reports whether
// lang is now built the best way this worker can.
func (w *Worker) probeLanguage(ctx context.Context, log *slog.Logger, lang string) bool {
	w.mu.Lock()
	var ns sandbox.Runner // stays nil (not a typed nil) when unusable
	if w.ns != nil {
		ns = w.ns
	}
	w.mu.Unlock()
	configured := w.cfg.Server.RVersion
	if lang == registry.LangPython {
		configured = w.cfg.Server.PythonVersion
	}
	probe := func(r sandbox.Runner) (detect.Tool, error) {
		if w.opts.BeforeProbe != nil {
			w.opts.BeforeProbe(lang)
		}
		d := &detect.Detector{Runner: r, Log: log, TempDir: w.cfg.Server.TempDir}
		if lang == registry.LangR {
			return d.R(ctx, configured)
		}
		return d.Python(ctx, configured)
	}
	if ns != nil {
		t, err := probe(ns)
		if err == nil {
			w.enable(lang, t, ns)
			return true
		}
		if errors.Is(err, sandbox.ErrNamespaceLimit) {
			w.mu.Lock()
			w.limitRefused = true
			w.mu.Unlock()
		}
	}
	if !w.cfg.Git.AllowUnsandboxedGitBuilds {
		return false
	}
	w.mu.Lock()
	_, unsandboxed := w.tools[lang]
	w.mu.Unlock()
	if unsandboxed {
		return false // already built without the sandbox; the sandbox still fails
	}
	t, err := probe(w.direct)
	if err != nil {
		return false
	}
	log.Warn(fmt.Sprintf("Building Git packages for %s WITHOUT a sandbox (Git.AllowUnsandboxedGitBuilds = true)", langName(lang)))
	w.enable(lang, t, w.direct)
	return false
}

// enable makes lang buildable with tool through runner, for the builds
// that start from now on.
func (w *Worker) enable(lang string, tool detect.Tool, runner sandbox.Runner) {
	var rc recipe.Recipe = &recipe.Python{Runner: runner, Tool: tool}
	if lang == registry.LangR {
		rc = &recipe.R{Runner: runner, Tool: tool}
	}
	tier := "unsandboxed"
	if ns, ok := runner.(*sandbox.Namespaces); ok {
		tier = string(ns.Tier())
	}
	w.mu.Lock()
	w.tools[lang], w.runners[lang] = tool, runner
	w.mu.Unlock()
	w.langs.Set(lang, pipeline.Language{Recipe: rc, Sandbox: runner.Mode(), Tier: tier})
	w.metrics.LanguageUsable(lang, true)
}

// setSlots caps Worker.Concurrency to what the sandbox allows: the
// user-namespace limit, and the builds one process may run in its tier.
func (w *Worker) setSlots() {
	w.mu.Lock()
	defer w.mu.Unlock()
	slots := w.cfg.Worker.Concurrency
	sandboxed := false
	for _, r := range w.runners {
		sandboxed = sandboxed || r.Mode() == "user-namespace"
	}
	if sandboxed {
		capped, err := roster.CapSlots(slots, w.maxNS)
		if err != nil {
			w.log.Warn("not enough user namespaces for this worker's build slots", "error", err)
		}
		slots = capped
	}
	w.slots = slots
}

// missing reports whether a re-probe could still improve the worker: the
// sandbox is unusable, a language is off, or one is built unsandboxed.
func (w *Worker) missing() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ns == nil || w.storeErr != nil {
		return true
	}
	for _, lang := range languages {
		if r, ok := w.runners[lang]; !ok || r.Mode() != "user-namespace" {
			return true
		}
	}
	return false
}

// reprobe probes again, with a growing wait (Worker.ReprobeInterval
// doubling up to five minutes), what failed at start: the sandbox and
// the languages that are off or built unsandboxed. A refusal can be
// transient (user namespaces are freed lazily, so a probe right after
// another can hit max_user_namespaces), so it is no verdict for the
// worker's life. A failed re-probe logs one line at debug level; one that
// passes logs PPM's detection lines as at start, and serve starts taking
// that language's queue.
func (w *Worker) reprobe(ctx context.Context) {
	first := w.cfg.Worker.ReprobeInterval
	if first <= 0 {
		return
	}
	wait := first
	for w.missing() {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if w.reprobeOnce(ctx) {
			wait = first
		} else {
			wait = min(2*wait, max(maxReprobeWait, first))
		}
	}
}

// reprobeOnce probes what is missing once and reports whether anything
// came back. Each probe logs into a buffer, replayed only when it passed.
func (w *Worker) reprobeOnce(ctx context.Context) bool {
	came := false
	w.mu.Lock()
	sandboxDown := w.ns == nil
	storeDown := w.storeErr != nil
	w.mu.Unlock()
	if storeDown {
		buf := &bufferedLog{}
		if !w.checkStore(ctx, slog.New(buf)) {
			w.log.Debug("re-probe: the artifact store still fails its check", "error", w.storeError())
		} else {
			buf.replay(ctx, w.log)
			w.changes()
		}
	}
	if sandboxDown {
		buf := &bufferedLog{}
		if !w.probeSandbox(slog.New(buf)) {
			w.log.Debug("re-probe: the sandbox is still unusable", "error", w.sandboxError())
			return false
		}
		buf.replay(ctx, w.log)
		came = true
	}
	for _, lang := range languages {
		w.mu.Lock()
		r, ok := w.runners[lang]
		w.mu.Unlock()
		if ok && r.Mode() == "user-namespace" {
			continue
		}
		buf := &bufferedLog{}
		sandboxed := w.probeLanguage(ctx, slog.New(buf), lang)
		w.mu.Lock()
		_, now := w.runners[lang]
		w.mu.Unlock()
		if sandboxed || (!ok && now) {
			buf.replay(ctx, w.log)
			came = true
			continue
		}
		w.log.Debug("re-probe: " + langName(lang) + " is still not usable in the sandbox")
	}
	if came {
		w.setSlots()
		w.changes()
	}
	return came
}

func (w *Worker) storeError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.storeErr
}

func (w *Worker) sandboxError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sandboxErr
}

func langName(lang string) string {
	if lang == registry.LangR {
		return "R"
	}
	return "Python"
}

// bufferedLog is a slog.Handler that keeps records to replay them later
// into the worker's logger.
type bufferedLog struct {
	mu      sync.Mutex
	records []slog.Record
}

func (b *bufferedLog) Enabled(context.Context, slog.Level) bool { return true }

func (b *bufferedLog) Handle(_ context.Context, r slog.Record) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.records = append(b.records, r.Clone())
	return nil
}

// WithAttrs and WithGroup keep the records' own attributes only: the
// probes (internal/detect) log without them.
func (b *bufferedLog) WithAttrs([]slog.Attr) slog.Handler { return b }

func (b *bufferedLog) WithGroup(string) slog.Handler { return b }

func (b *bufferedLog) replay(ctx context.Context, to *slog.Logger) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.records {
		if to.Handler().Enabled(ctx, r.Level) {
			_ = to.Handler().Handle(ctx, r)
		}
	}
}
