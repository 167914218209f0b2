package faulttest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// The Jepsen case (issue 25): a partition puts the master and worker w1
// on one side, the sentinels, the replicas and worker w2 on the other
// (testenv.StartPartitionable: the set reaches the master only through a
// relay, which the test freezes; w1 and an API "api-cut" ask a sentinel
// on the master's side, which goes on naming it the master). The old
// master still answers w1, so w1's writes reach it; the durability
// contract (docs/fleet.md) must keep any of them from counting: w1 stops
// its build on its own clock, the other side promotes a replica and
// builds the build again, and nothing the old master took during the
// partition was acknowledged to anyone as durable.
func TestTheJepsenPartitionCutsOffTheMasterWithAWorkerAndLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	const secs = "75.03"
	const fenceAfter = 4 * time.Second // the workers' T (see child)
	s := testenv.StartPartitionable(t)
	f := setup(t,
		"PKGFLEET_REDIS_SENTINELADDRESSES", s.Addresses(),
		"PKGFLEET_REDIS_SENTINELMASTER", testenv.SentinelMaster,
		"PKGFLEET_REDIS_WAITTIMEOUT", "500ms")
	f.rdb.Close()
	f.rdb = s.Client(t)
	minority := []string{"PKGFLEET_REDIS_SENTINELADDRESSES", s.Minority.Addr, "PKGFLEET_REDIS_SENTINELMASTER", testenv.MinorityMaster}
	cutAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	f.start("api", "api")
	f.start("api", "api-cut", append(minority, "PKGFLEET_HTTP_LISTEN", cutAddr)...)
	cut := &fleet{t: t, url: "http://" + cutAddr, client: f.client}
	testenv.Eventually(t, 30*time.Second, "both APIs to be ready", func() bool { return f.ready() && cut.ready() })
	w1 := f.start("worker", "w1", minority...)
	testenv.Eventually(t, 60*time.Second, "w1 to be ready", func() bool { return w1.logged("worker ready") })
	f.builders(map[string]string{"long": secs, "during": "0.2", "after": "0.2"})
	// The builders' first builds (the poller queues them too) end before
	// the partition: a rerun of "during" in it must make a new build.
	during, after := f.waitDone(f.run("during")), f.waitDone(f.run("after"))
	c := countCopies(t, secs)
	id := f.run("long")
	testenv.Eventually(t, time.Minute, "w1's copy of the build", func() bool { return c.now.Load() == 1 })
	first := f.build(id)
	old := s.Nodes[0]
	if m, err := s.Master(context.Background()); err != nil || m != old || first.Worker != "w1" {
		t.Fatalf("before the partition: master %v (%v), build on %q; want the first node, w1", m, err, first.Worker)
	}

	s.Relay.Freeze()
	parted := time.Now()
	// When w1's copy ends and when the sentinels name another master,
	// each seen by its own poll.
	stopped, promoted := since(t, parted, func() bool { return c.now.Load() == 0 }),
		since(t, parted, func() bool { m, err := s.Master(context.Background()); return err == nil && m != old })

	// The old master's side: a write it takes is never confirmed durable,
	// and within min-replicas-max-lag (10s) it refuses writes.
	probe := redis.NewClient(&redis.Options{Addr: old.Addr, MaxRetries: -1})
	defer probe.Close()
	ctx := context.Background()
	if err := probe.Set(ctx, "jepsen:probe", "taken by the old master", 0).Err(); err != nil {
		t.Logf("the old master refused the probe at once: %v", err)
	} else if err := (redisconn.Durability{Replicas: 1, Timeout: 500 * time.Millisecond}).Wait(ctx, probe); !errors.Is(err, redisconn.ErrNotDurable) {
		t.Errorf("the cut-off old master's write was confirmed durable (%v); no replica could hold it", err)
	}
	// A build asked of the API on the old master's side is refused, never
	// acknowledged (its 202 would name an id the other side gives again).
	if code, out := cut.do("POST", "/api/v1/sources/py/git-builders/during/rerun", map[string]string{"commit_sha": during.SHA}); code != http.StatusServiceUnavailable {
		t.Errorf("the cut-off API answered %d during the partition, want 503: %s", code, out)
	}

	// w1 stops its copy on its own clock: by T plus the time to kill.
	testenv.Eventually(t, fenceAfter+10*time.Second, "w1 to stop its own copy (T 4s + 10s)", func() bool { return c.now.Load() == 0 })
	testenv.Eventually(t, 10*time.Second, "w1's WARN line", func() bool {
		return w1.logged(`msg="build stopped: its hold was lost"`)
	})
	testenv.Eventually(t, 20*time.Second, "the old master to refuse writes (min-replicas-max-lag 10s)", func() bool {
		err := probe.Set(ctx, "jepsen:late", "x", 0).Err()
		return err != nil && strings.Contains(err.Error(), "NOREPLICAS")
	})
	refusing := time.Since(parted)

	// The other side promotes a replica and builds the build again.
	testenv.Eventually(t, time.Minute, "the sentinels to promote a replica", func() bool { return promoted() > 0 })
	f.takeOver(id, secs, c)
	tookOver := time.Since(parted)

	s.Relay.Thaw()
	testenv.Eventually(t, time.Minute, "the old master to rejoin as a replica", func() bool { return old.Role() == "slave" })
	testenv.Eventually(t, time.Minute, "the old master to drop what it took during the partition", func() bool {
		return probe.Exists(ctx, "jepsen:probe", "jepsen:late").Val() == 0
	})

	done := f.waitDone(id)
	t.Logf("partition -> w1's copy stopped %s; old master refusing writes %s; replica promoted %s; w2's copy running %s",
		stopped().Round(100*time.Millisecond), refusing.Round(100*time.Millisecond), promoted().Round(100*time.Millisecond), tookOver.Round(100*time.Millisecond))
	if done.Status != registry.StatusSucceeded || done.Worker != "w2" || done.Attempts != 2 || done.AttemptToken <= first.AttemptToken {
		t.Fatalf("build %d: %s on %s, attempt %d (token %d, w1's %d): %s; want succeeded on w2 under a newer token",
			id, done.Status, done.Worker, done.Attempts, done.AttemptToken, first.AttemptToken, done.Detail)
	}
	if done.Builder != "long" || done.SHA != first.SHA {
		t.Errorf("build %d was long@%s and now names %s@%s", id, first.SHA, done.Builder, done.SHA)
	}
	if n := c.max.Load(); n != 1 {
		t.Errorf("%d copies of the build ran at once, want 1", n)
	}
	log := f.buildLog(id)
	if n := strings.Count(log, "==> succeeded"); n != 1 || strings.Contains(log, "stopped on worker w1") {
		t.Errorf("the log has %d success lines, or w1's lines from the partition:\n%s", n, log)
	}
	f.checkArtifacts(done)
	// No id names two builds: the next build gets an id of its own, and
	// every earlier one still names what it was acknowledged as.
	next := f.waitDone(f.rerun("after", after.SHA))
	for _, b := range []*registry.Build{during, after, done} {
		if next.ID == b.ID {
			t.Errorf("the build after the heal got id %d, already build %s@%s's", next.ID, b.Builder, b.SHA)
		}
		if again := f.build(b.ID); again.Builder != b.Builder || again.SHA != b.SHA || again.AttemptToken != b.AttemptToken || again.Status != registry.StatusSucceeded {
			t.Errorf("build %d changed across the partition: %+v, was %+v", b.ID, again, b)
		}
	}
}

// since polls cond every 50ms from now on, in the background, and returns
// how long after from it first held (0 while it has not).
func since(t *testing.T, from time.Time, cond func() bool) func() time.Duration {
	var at atomic.Int64
	ctx, stop := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(stop)
	go func() {
		for ctx.Err() == nil {
			if cond() {
				at.Store(int64(time.Since(from)))
				return
			}
			time.Sleep(50 * time.Millisecond) // the sampling period, not a synchronisation
		}
	}()
	return func() time.Duration { return time.Duration(at.Load()) }
}
