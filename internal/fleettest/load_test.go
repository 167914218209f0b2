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
// build record. It then runs the same number of no-op tasks through raw
// asynq on the same Redis and reports both throughputs, the ratio, the
// enqueue→start latency p50/p99, and the CPU and memory used.
func TestNoopBuildLoad(t *testing.T) {
	t.Parallel()
	n := loadBuilds()
	// It measures the build path, not HTTP.WriteRate: n writes at once.
	f := setup(t, n, "PKGFLEET_HTTP_WRITERATE", "0")
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
	var lat []time.Duration
	for _, id := range ids {
		b := f.waitStatus(id, registry.StatusSucceeded)
		lat = append(lat, b.StartedAt.Sub(b.CreatedAt))
	}
	pkgfleet := time.Since(start)
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond

	// The anchor: raw asynq, enqueue + a no-op handler, same Redis, same
	// concurrency.
	raw := rawAsynq(t, n).elapsed

	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	t.Logf("BENCH noop builds=%d pkgfleet=%.1f/s raw-asynq=%.1f/s ratio=%.1fx enqueue->start p50=%s p99=%s api+worker cpu=%s (%.2f ms/build) maxrss=%d MiB",
		n, float64(n)/pkgfleet.Seconds(), float64(n)/raw.Seconds(), pkgfleet.Seconds()/raw.Seconds(),
		p(0.50).Round(time.Millisecond), p(0.99).Round(time.Millisecond),
		cpu.Round(time.Millisecond), float64(cpu.Microseconds())/1000/float64(n), ru1.Maxrss/1024)
}
