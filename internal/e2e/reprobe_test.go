package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/roster"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/pkgfleet/pkgfleet/internal/worker"
)

// These tests lower max_user_namespaces inside a user namespace of their
// own (testenv.InUserNamespace), as a container runtime or an admin may
// on a node, and check that a refusal by that limit is not a verdict for
// life.

func TestALanguageRefusedByTheNamespaceLimitComesBackOnReprobe(t *testing.T) {
	t.Parallel()
	if !testenv.InUserNamespace(t) {
		return
	}
	testenv.SetMaxUserNamespaces(t, 1000)
	// The first Python probe runs with room for one namespace where the
	// sandbox needs two, as when R's probe namespaces are not freed yet;
	// the next one has room again.
	var pythonProbes atomic.Int32
	f := setup(t, map[string]string{
		"PKGFLEET_WORKER_REPROBEINTERVAL": "50ms",
		"PKGFLEET_WORKER_METRICSLISTEN":   "127.0.0.1:0",
	}, func(o *worker.Options) {
		o.BeforeProbe = func(lang string) {
			if lang != registry.LangPython {
				return
			}
			if pythonProbes.Add(1) == 1 {
				testenv.SetMaxUserNamespaces(t, 1)
			} else {
				testenv.SetMaxUserNamespaces(t, 1000)
			}
		}
	})

	testenv.Eventually(t, time.Minute, "Python to come back", func() bool {
		_, ok := f.wkr.Info().Languages[registry.LangPython]
		return ok
	})
	// The re-probe's detection lines are replayed once Python is on: wait for them.
	defer func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", f.logs.String())
		}
	}()
	var logs string
	testenv.Eventually(t, 30*time.Second, "Python disabled at start, then PPM's detection lines again on a re-probe", func() bool {
		logs = f.logs.String()
		off := strings.Index(logs, "Warning: Unable to use Python on this system. Building Git packages for Python will be disabled.")
		back := strings.LastIndex(logs, "Detected Python version")
		return off >= 0 && back > off && strings.Count(logs, "Attempting to detect Python version in a user namespace sandbox.") >= 2
	})
	// Either serve had started with R's queue alone and adds Python's
	// ("worker takes builds from new queues"), or the re-probe passed
	// before serve started at all.
	testenv.Eventually(t, 30*time.Second, "the worker to take the Python queue", func() bool {
		return strings.Contains(f.logs.String(), "queues=builds:python,builds:r")
	})
	var resp struct{ Workers []roster.Worker }
	testenv.Eventually(t, 30*time.Second, "the workers list to show Python", func() bool {
		json.Unmarshal(f.do("GET", "/api/v1/workers", nil, 200), &resp)
		return len(resp.Workers) == 1 && resp.Workers[0].Languages[registry.LangPython].Sandbox == "user-namespace"
	})
	tier := resp.Workers[0].SandboxTier
	if tier == "" || tier == "none" {
		t.Fatalf("workers list: sandbox_tier = %q", tier)
	}
	if !regexp.MustCompile(`msg="sandbox tier" tier=` + regexp.QuoteMeta(tier) + ` gives_up="[^"]+"`).MatchString(logs) {
		t.Errorf("no startup line naming tier %s and what it gives up:\n%s", tier, logs)
	}
	var ops string
	testenv.Eventually(t, 10*time.Second, "the worker's metrics listener", func() bool { ops = f.wkr.OpsAddr(); return ops != "" })
	metrics := scrape(t, "http://"+ops+"/metrics")
	for _, want := range []string{`pkgfleet_language_usable{language="python"} 1`, fmt.Sprintf(`pkgfleet_worker_sandbox_tier{tier=%q} 1`, tier)} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// And it builds Python now.
	repo := versionedRepo(t, "python/hellofleet-py", "pyproject.toml", "src/hellofleet_py/__init__.py")
	f.do("POST", "/api/v1/sources", map[string]string{"name": "py", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/py/git-builders", map[string]any{"name": "hello", "url": "file://" + repo}, 201)
	b := f.mustSucceed(f.run("/api/v1/sources/py/git-builders/hello/run", nil))
	if b.Sandbox != "user-namespace" || b.SandboxTier != tier || b.Attempts != 1 {
		t.Fatalf("build: sandbox %q, tier %q, %d attempts; want user-namespace, %q, 1", b.Sandbox, b.SandboxTier, b.Attempts, tier)
	}
}

func TestABuildRefusedByTheNamespaceLimitGoesBackInLineWithoutSpendingAnAttempt(t *testing.T) {
	t.Parallel()
	if !testenv.InUserNamespace(t) {
		return
	}
	testenv.SetMaxUserNamespaces(t, 1000)
	// Git.BuildRetries is 2 here: more refusals than that would have
	// failed the build if they were counted.
	f := setup(t, map[string]string{"PKGFLEET_WORKER_METRICSLISTEN": "127.0.0.1:0"})
	var ops string
	testenv.Eventually(t, 10*time.Second, "the worker's metrics listener", func() bool { ops = f.wkr.OpsAddr(); return ops != "" })
	refusals := func() int {
		m := regexp.MustCompile(`(?m)^pkgfleet_sandbox_start_failures_total\{reason="namespace_limit"\} (\d+)$`).
			FindStringSubmatch(scrape(t, "http://"+ops+"/metrics"))
		if m == nil {
			t.Fatal("no namespace_limit failure counter in the worker's metrics")
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	if n := refusals(); n != 0 {
		t.Fatalf("%d refusals before any build", n)
	}

	repo := versionedRepo(t, "r/hellofleet", "DESCRIPTION")
	f.do("POST", "/api/v1/sources", map[string]string{"name": "r", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/r/git-builders", map[string]any{"name": "hellofleet", "url": "file://" + repo}, 201)
	testenv.SetMaxUserNamespaces(t, 1) // the sandbox needs two
	id := f.run("/api/v1/sources/r/git-builders/hellofleet/run", nil).ID
	testenv.Eventually(t, time.Minute, "three refusals by the namespace limit", func() bool { return refusals() >= 3 })
	var b registry.Build
	testenv.Eventually(t, 30*time.Second, "the build to show it is back in line", func() bool {
		json.Unmarshal(f.do("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil, 200), &b)
		return strings.Contains(b.Detail, "back in line")
	})
	if b.Status != registry.StatusQueued || b.Attempts != 0 {
		t.Fatalf("refused build: %s after %d attempts (%s); want queued after 0", b.Status, b.Attempts, b.Detail)
	}

	testenv.SetMaxUserNamespaces(t, 1000)
	done := f.mustSucceed(&b)
	if done.Attempts != 1 || done.MaxAttempts != 2 || done.SandboxTier == "" {
		t.Fatalf("build succeeded after %d of %d attempts, tier %q; want 1 of 2", done.Attempts, done.MaxAttempts, done.SandboxTier)
	}
	if log := f.log(id); !strings.Contains(log, "back in line; this attempt is not counted") {
		t.Errorf("build log does not say the refusal was not counted:\n%s", log)
	}
}

func TestASandboxRefusedByTheNamespaceLimitAtStartComesBack(t *testing.T) {
	t.Parallel()
	if !testenv.InUserNamespace(t) {
		return
	}
	// Not even the sandbox's set-up fits: the worker starts with nothing
	// to build, and stays up rather than refuse for life.
	testenv.SetMaxUserNamespaces(t, 1)
	f := setup(t, map[string]string{"PKGFLEET_WORKER_REPROBEINTERVAL": "50ms"})
	if info := f.wkr.Info(); len(info.Languages) != 0 || info.SandboxTier != "none" {
		t.Fatalf("at start: languages %v, tier %q; want none", info.Languages, info.SandboxTier)
	}
	testenv.SetMaxUserNamespaces(t, 1000)
	testenv.Eventually(t, time.Minute, "the worker to serve both languages", func() bool {
		return strings.Contains(f.logs.String(), "worker ready")
	})
	info := f.wkr.Info()
	if info.SandboxTier == "none" || len(info.Languages) != 2 {
		t.Fatalf("after the re-probe: tier %q, languages %v", info.SandboxTier, info.Languages)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, `msg="sandbox tier" tier=none`) || !strings.Contains(logs, `msg="sandbox tier" tier=`+info.SandboxTier) {
		t.Fatalf("want the tier logged as none, then as %s:\n%s", info.SandboxTier, logs)
	}
	repo := versionedRepo(t, "r/hellofleet", "DESCRIPTION")
	f.do("POST", "/api/v1/sources", map[string]string{"name": "r", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/r/git-builders", map[string]any{"name": "hellofleet", "url": "file://" + repo}, 201)
	if b := f.mustSucceed(f.run("/api/v1/sources/r/git-builders/hellofleet/run", nil)); b.SandboxTier != info.SandboxTier {
		t.Fatalf("build tier %q, worker tier %q", b.SandboxTier, info.SandboxTier)
	}
}
