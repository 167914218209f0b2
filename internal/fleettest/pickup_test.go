package fleettest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/pkgfleet/pkgfleet/internal/worker"
)

// pushes is how many one-at-a-time builds TestPushToBuildProcessStart
// times: PKGFLEET_PUSHES (scripts/bench.sh), or a few in `go test`.
func pushes() int {
	if n, err := strconv.Atoi(os.Getenv("PKGFLEET_PUSHES")); err == nil && n > 0 {
		return n
	}
	return 5
}

// TestPushToBuildProcessStart times, on an idle fleet (one worker, the
// worker's default task-check interval), `run` of a commit through the API
// to the start of the build's process, one push at a time; it splits the
// time at the record's started_at (the worker took the task) and reports
// p50/p99 of each. It asserts that every push ran its own build.
func TestPushToBuildProcessStart(t *testing.T) {
	n := pushes()
	f := setup(t, 1)
	sha := f.builder("push", registry.TriggerTags, 1)[0]
	starts := filepath.Join(f.dir, "starts")
	f.recipe.command.Store("date +%s%N >> " + starts)
	f.worker("idle", 1)
	var total, pickup, launch, clone []time.Duration
	var last int64
	for i := range n {
		t0 := time.Now()
		id := f.rerun("push", sha)
		if id == last {
			t.Fatalf("push %d did not make a new build", i)
		}
		last = id
		b := f.waitStatus(id, registry.StatusSucceeded)
		raw, err := os.ReadFile(starts)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Fields(string(raw))
		if len(lines) != i+1 {
			t.Fatalf("after %d pushes the build process started %d times", i+1, len(lines))
		}
		ns, err := strconv.ParseInt(lines[i], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		started := time.Unix(0, ns)
		total = append(total, started.Sub(t0))
		pickup = append(pickup, b.StartedAt.Sub(t0))
		launch = append(launch, started.Sub(*b.StartedAt))
		for _, p := range b.Phases {
			if p.Phase == registry.PhaseClone {
				clone = append(clone, time.Duration(p.MS*float64(time.Millisecond)))
			}
		}
	}
	if len(clone) != n {
		t.Fatalf("%d of %d builds recorded a clone phase", len(clone), n)
	}
	q := func(d []time.Duration, p float64) string {
		return fmt.Sprint(quantile(d, p).Round(100 * time.Microsecond))
	}
	t.Logf("BENCH push->build process start pushes=%d p50=%s p99=%s | push->worker took it (record started_at) p50=%s p99=%s | started_at->process (clone, launch) p50=%s p99=%s, of which the clone phase p50=%s p99=%s",
		n, q(total, 0.5), q(total, 0.99), q(pickup, 0.5), q(pickup, 0.99), q(launch, 0.5), q(launch, 0.99), q(clone, 0.5), q(clone, 0.99))
}

// TestIdleWorkerCost measures what an idle worker process costs while it
// polls for builds (asynq sleeps 0.5-1.5 task-check intervals between
// dequeues of each of its queues): its Redis commands and CPU per second,
// and Redis's CPU per second, at the worker's default task-check interval
// and at the old 50 ms, in the same run, twice each in turn (a shared
// machine's noise shows). The worker serves one queue; one that builds R
// and Python sends a dequeue script per queue per check.
func TestIdleWorkerCost(t *testing.T) {
	if os.Getenv("PKGFLEET_BENCH") == "" {
		t.Skip("a benchmark: scripts/bench.sh runs it")
	}
	f := setup(t, 1)
	const idle = 5 * time.Second
	inspector := asynq.NewInspectorFromRedisClient(f.rdb)
	redisCPU := func() time.Duration {
		info, err := f.rdb.Info(context.Background(), "cpu").Result()
		if err != nil {
			t.Fatal(err)
		}
		var total float64
		for _, line := range strings.Fields(info) {
			for _, key := range []string{"used_cpu_sys:", "used_cpu_user:"} {
				if v, ok := strings.CutPrefix(line, key); ok {
					sec, _ := strconv.ParseFloat(v, 64)
					total += sec
				}
			}
		}
		return time.Duration(total * float64(time.Second))
	}
	var lines []string
	for _, check := range []time.Duration{worker.DefaultTaskCheckInterval, 50 * time.Millisecond, worker.DefaultTaskCheckInterval, 50 * time.Millisecond} {
		name := fmt.Sprint("idle-", len(lines))
		stats := filepath.Join(f.dir, name+".stats")
		w := f.child(childSpec{Name: name, Slots: 4, Noop: true, Stats: stats, TaskCheck: check})
		// Its asynq server registers after it can report its stats.
		testenv.Eventually(t, 30*time.Second, "the idle worker's asynq server", func() bool {
			servers, _ := inspector.Servers()
			for _, s := range servers {
				if s.PID == w.Process.Pid {
					return true
				}
			}
			return false
		})
		before, r0 := childStats(t, w.Process.Pid, stats), redisCPU()
		time.Sleep(idle) // the measuring window

		after, r1 := childStats(t, w.Process.Pid, stats), redisCPU()
		w.Process.Kill()
		w.Wait()
		cmds := float64(after.cmds-before.cmds) / idle.Seconds()
		if cmds == 0 {
			t.Fatalf("the idle worker at %s sent no Redis command in %s: it does not poll", check, idle)
		}
		perSec := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / idle.Seconds() }
		lines = append(lines, fmt.Sprintf("task-check %s: %.1f Redis commands/s, worker CPU %.1f ms/s, Redis CPU %.1f ms/s",
			check, cmds, perSec(after.cpu-before.cpu), perSec(r1-r0)))
	}
	t.Logf("BENCH idle worker (one queue, %s each) | %s", idle, strings.Join(lines, " | "))
}
