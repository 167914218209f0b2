package faulttest

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// The fencing tests (issue 18): a worker cut off from Redis, or paused,
// for longer than asynq's lease must never leave its copy of a build
// running beside the copy of the worker that took the build over, and its
// late writes must not touch the live attempt. The workers run with T
// (FenceAfter) 4s and a 6s slot lease; asynq's own lease (30s) and its
// recoverer's 30s grace are fixed, so each test takes about two minutes.

const (
	relayListenEnv = "PKGFLEET_FAULTTEST_RELAY_LISTEN"
	relayTargetEnv = "PKGFLEET_FAULTTEST_RELAY_TARGET"
)

// relay is a process that forwards TCP connections on listen to the unix
// socket target: the link of one worker to Redis, which the test cuts by
// freezing the process (SIGSTOP), so connections hang rather than reset.
func relay(listen, target string) int {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("relay ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			r, err := net.Dial("unix", target)
			if err != nil {
				return
			}
			defer r.Close()
			go func() { _, _ = io.Copy(r, c) }()
			_, _ = io.Copy(c, r)
		}()
	}
}

// copies counts, every 50ms until the test ends, the processes on the host
// that run `sleep secs` (a build's copy), and keeps the most seen at once.
type copies struct {
	max, now atomic.Int32
}

func countCopies(t *testing.T, secs string) *copies {
	c := &copies{}
	want := "sleep\x00" + sleepArg(secs) + "\x00"
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			n := int32(0)
			ents, _ := os.ReadDir("/proc")
			for _, e := range ents {
				if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && string(b) == want {
					n++
				}
			}
			c.now.Store(n)
			if n > c.max.Load() {
				c.max.Store(n)
			}
			time.Sleep(50 * time.Millisecond) // the sampling period, not a synchronisation
		}
	}()
	t.Cleanup(func() { stop(); wg.Wait() })
	return c
}

// waitLeaseRecoverable waits until asynq's recoverer (which re-queues a
// task whose lease ended more than 30s ago) would take the build's task
// over: a worker started then recovers it at once.
func (f *fleet) waitLeaseRecoverable(b *registry.Build) {
	f.t.Helper()
	key, id := queue.LeaseKey(queue.Queue(b.Language)), queue.TaskID(b.Source, b.Builder, b.SHA)
	testenv.Eventually(f.t, 3*time.Minute, "the frozen worker's task lease to be recoverable", func() bool {
		exp, err := f.rdb.ZScore(context.Background(), key, id).Result()
		return err == nil && time.Now().Unix() > int64(exp)+31
	})
}

// fencedFleet starts, on f's Redis (already serving), the API and worker
// w1 (with w1Env, key, value pairs, over the fleet's settings), and makes
// builder "long", whose build sleeps secs once.
func fencedFleet(f *fleet, secs string, w1Env ...string) *proc {
	f.t.Helper()
	f.start("api", "api")
	testenv.Eventually(f.t, 30*time.Second, "the API to be ready", f.ready)
	w1 := f.start("worker", "w1", w1Env...)
	testenv.Eventually(f.t, 60*time.Second, "w1 to be ready", func() bool { return w1.logged("worker ready") })
	f.builders(map[string]string{"long": secs})
	return w1
}

// takeOver starts worker w2 once w1's lease of build id is recoverable,
// and waits until w2's copy of the build runs.
func (f *fleet) takeOver(id int64, secs string, c *copies) *proc {
	f.t.Helper()
	f.waitLeaseRecoverable(f.build(id))
	w2 := f.start("worker", "w2")
	f.waitStatus(id, 2*time.Minute, func(b *registry.Build) bool { return b.Status == registry.StatusRunning && b.Worker == "w2" }, "to run on w2")
	testenv.Eventually(f.t, time.Minute, "w2's copy of the build", func() bool { return c.now.Load() >= 1 })
	return w2
}

// checkFenced asserts what both tests promise once w1 is back: one copy at
// most, one final record by w2, w1's late writes refused, and w1 serving
// builds again.
func (f *fleet) checkFenced(id int64, c *copies, w1, w2 *proc) {
	f.t.Helper()
	b := f.waitDone(id)
	if b.Status != registry.StatusSucceeded || b.Worker != "w2" {
		f.t.Fatalf("build %d: %s on %s after %d attempts: %s", id, b.Status, b.Worker, b.Attempts, b.Detail)
	}
	if b.Attempts != 2 {
		// Attempt 1 is w1's, recovered by asynq; w2's must need no retry.
		f.t.Errorf("the build succeeded on attempt %d, want 2 (the live attempt unharmed)", b.Attempts)
	}
	if n := c.max.Load(); n != 1 {
		f.t.Fatalf("%d copies of the build ran at once, want 1", n)
	}
	testenv.Eventually(f.t, 3*time.Minute, "w1 to log its refused late write", func() bool {
		return w1.logged("stale write refused") && w1.logged(fmt.Sprintf("superseded by attempt 2 (token %d) on worker w2", b.AttemptToken))
	})
	log := f.buildLog(id)
	if n := strings.Count(log, "==> succeeded"); n != 1 || strings.Contains(log, "stopped on worker w1") {
		f.t.Fatalf("the log has %d success lines, or w1's late lines:\n%s", n, log)
	}
	if after := f.build(id); after.Status != registry.StatusSucceeded || after.Worker != "w2" || after.AttemptToken != b.AttemptToken {
		f.t.Fatalf("w1's late writes changed the record: %+v", after)
	}
	// w1 serves again: with w2 gone, the next build is w1's.
	w2.stop(f.t, syscall.SIGTERM)
	f.addBuilder("again", "0.2")
	next := f.run("again")
	if nb := f.waitDone(next); nb.Status != registry.StatusSucceeded || nb.Worker != "w1" {
		f.t.Fatalf("after the heal, build %d: %s on %s: %s", next, nb.Status, nb.Worker, nb.Detail)
	}
}

// partitions are the ways TestAPartitionedWorkerFencesItselfAndItsLateWritesAreRefused
// cuts w1 alone off from Redis: each sets up the fleet with its Redis
// serving and returns w1's settings and how to cut and heal its link.
func partitions() []struct {
	name  string
	fleet func(t *testing.T) (f *fleet, w1Env []string, cut, heal func())
} {
	return []struct {
		name  string
		fleet func(t *testing.T) (f *fleet, w1Env []string, cut, heal func())
	}{
		// One redis-server: w1 reaches its socket through a relay process,
		// frozen by SIGSTOP; w2 (started later) reaches it directly.
		{"single", func(t *testing.T) (*fleet, []string, func(), func()) {
			f := setup(t)
			f.startRedis()
			addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
			r := f.start("relay", "relay", relayListenEnv, addr, relayTargetEnv, f.sock)
			testenv.Eventually(t, 30*time.Second, "the relay to listen", func() bool { return r.logged("relay ready") })
			return f, []string{"PKGFLEET_REDIS_ADDRESS", addr},
				func() { r.cmd.Process.Signal(syscall.SIGSTOP) }, func() { r.cmd.Process.Signal(syscall.SIGCONT) }
		}},
		// Through Sentinel (durability step on): w1 asks a sentinel of its
		// own (testenv's CutOff), which names the master behind a relay
		// only w1 uses; the rest of the fleet asks the set. Freezing that
		// relay cuts w1 off from the master while the set, whose master
		// stays up, has no failover to make.
		{"sentinel", func(t *testing.T) (*fleet, []string, func(), func()) {
			s := testenv.StartPartitionable(t)
			f := sentinelSettings(t, s)
			addr, r := s.CutOff(t)
			return f, []string{"PKGFLEET_REDIS_SENTINELADDRESSES", addr, "PKGFLEET_REDIS_SENTINELMASTER", testenv.CutMaster}, r.Freeze, r.Thaw
		}},
	}
}

func TestAPartitionedWorkerFencesItselfAndItsLateWritesAreRefused(t *testing.T) {
	t.Parallel()
	for i, p := range partitions() {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			// Apart from the other fencing tests' and from each other's:
			// copies are counted by their command line, host-wide.
			secs := fmt.Sprintf("75.%02d", 11+i)
			f, w1Env, cutLink, heal := p.fleet(t)
			w1 := fencedFleet(f, secs, w1Env...)
			c := countCopies(t, secs)
			id := f.run("long")
			testenv.Eventually(t, time.Minute, "w1's copy of the build", func() bool { return c.now.Load() == 1 })

			// Cut w1 off: its connections hang. It must stop its copy by itself.
			cutLink()
			cut := time.Now()
			testenv.Eventually(t, 30*time.Second, "w1 to stop its own copy", func() bool { return c.now.Load() == 0 })
			t.Logf("w1 stopped its copy %s after the cut", time.Since(cut).Round(100*time.Millisecond))
			testenv.Eventually(t, 10*time.Second, "w1's WARN line", func() bool {
				return w1.logged(`msg="build stopped: its hold was lost"`) && w1.logged("hold unconfirmed for")
			})

			w2 := f.takeOver(id, secs, c)
			heal() // while w2's copy runs
			t.Logf("healed after %s", time.Since(cut).Round(time.Second))
			f.checkFenced(id, c, w1, w2)
		})
	}
}

func TestAPausedWorkersBuildIsStoppedByItsSandboxAndItsLateWritesAreRefused(t *testing.T) {
	t.Parallel()
	const secs = "75.02"
	f := setup(t)
	f.startRedis()
	w1 := fencedFleet(f, secs)
	c := countCopies(t, secs)
	id := f.run("long")
	testenv.Eventually(t, time.Minute, "w1's copy of the build", func() bool { return c.now.Load() == 1 })

	// Pause w1 itself: none of its goroutines can fence anything; the
	// sandbox's helper, a process of its own, must stop the build.
	w1.cmd.Process.Signal(syscall.SIGSTOP)
	paused := time.Now()
	testenv.Eventually(t, 30*time.Second, "the sandbox to stop the paused worker's copy", func() bool { return c.now.Load() == 0 })
	t.Logf("the paused worker's copy stopped %s after the pause", time.Since(paused).Round(100*time.Millisecond))

	w2 := f.takeOver(id, secs, c)
	w1.cmd.Process.Signal(syscall.SIGCONT)
	f.checkFenced(id, c, w1, w2)
}
