package fleettest_test

import (
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// loadBuilds is how many no-op builds TestNoopBuildLoad pushes through:
// a small number in `go test`, PKGFLEET_LOAD_BUILDS (scripts/bench.sh) for
// the measured run.
func loadBuilds() int {
	if n, err := strconv.Atoi(os.Getenv("PKGFLEET_LOAD_BUILDS")); err == nil && n > 0 {
		return n
	}
	return 40
}

// TestNoopBuildLoad pushes n no-op builds (the recipe runs /bin/true)
// through the full path: API, registry, queue, fleet-wide slots, clone,
// build record; then the same n through a fleet whose worker has no object
// cache (Worker.ObjectCacheSize = 0: every clone fetches from the remote,
// the before-figure); then the same number of no-op tasks through raw
// asynq on the same Redis. It reports the throughputs, the ratio, the
// clone phase's p50, the enqueue→start latency p50/p99, and the CPU and
// memory used.
func TestNoopBuildLoad(t *testing.T) {
	t.Parallel()
	n := loadBuilds()
	cached := noopLoad(t, n)
	direct := noopLoad(t, n, "PKGFLEET_WORKER_OBJECTCACHESIZE", "0")
	// The anchor: raw asynq, enqueue + a no-op handler, same Redis, same
	// concurrency.
	raw := rawAsynq(t, n).elapsed
	t.Logf("BENCH noop builds=%d pkgfleet=%.1f/s (no object cache: %.1f/s) raw-asynq=%.1f/s ratio=%.1fx clone p50=%s (no object cache: %s) enqueue->start p50=%s p99=%s api+worker cpu=%s (%.2f ms/build; no object cache %.2f) maxrss=%d MiB",
		n, cached.rate, direct.rate, float64(n)/raw.Seconds(), float64(n)/cached.rate/raw.Seconds(),
		cached.cloneP50, direct.cloneP50, cached.startP50, cached.startP99,
		cached.cpu.Round(time.Millisecond), cached.cpuPerBuild, direct.cpuPerBuild, cached.maxRSS)
}

// loadFigures are what one noopLoad measured.
type loadFigures struct {
	rate                              float64 // builds per second
	cloneP50, startP50, startP99, cpu time.Duration
	cpuPerBuild                       float64 // ms of API and worker CPU
	maxRSS                            int64   // MiB
}

// noopLoad pushes n no-op builds of one tags builder through a fleet of
// one worker with 4 slots, with settings (name, value pairs), and
// measures it.
func noopLoad(t *testing.T, n int, settings ...string) loadFigures {
	// It measures the build path, not HTTP.WriteRate: n writes at once.
	f := setup(t, n, append([]string{"PKGFLEET_HTTP_WRITERATE", "0"}, settings...)...)
	f.recipe.command.Store("true")
	shas := f.builder("load", registry.TriggerTags, n)
	f.worker("L1", 4)
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)

	start := time.Now()
	ids := make([]int64, len(shas))
	for i, sha := range shas {
		ids[i] = f.rerun("load", sha)
	}
	var lat, clone []time.Duration
	for _, id := range ids {
		b := f.waitStatus(id, registry.StatusSucceeded)
		lat = append(lat, b.StartedAt.Sub(b.CreatedAt))
		for _, ph := range b.Phases {
			if ph.Phase == registry.PhaseClone {
				clone = append(clone, time.Duration(ph.MS*float64(time.Millisecond)))
			}
		}
	}
	elapsed := time.Since(start)
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	if len(clone) != n {
		t.Fatalf("%d of %d builds have a clone phase", len(clone), n)
	}
	p := quantile
	return loadFigures{rate: float64(n) / elapsed.Seconds(),
		cloneP50: p(clone, 0.50).Round(100 * time.Microsecond), startP50: p(lat, 0.50).Round(time.Millisecond), startP99: p(lat, 0.99).Round(time.Millisecond),
		cpu: cpu, cpuPerBuild: float64(cpu.Microseconds()) / 1000 / float64(n), maxRSS: ru1.Maxrss / 1024}
}

// quantile is the q-quantile (0.5, 0.99) of ds, which it sorts.
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}
