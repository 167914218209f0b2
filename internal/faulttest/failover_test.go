package faulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// The failover tests (issue 25): the fleet on one master, two replicas
// and three sentinels (testenv.StartSentinel), two API processes and two
// workers of two slots each, real Python builds; the master dies or
// freezes mid-burst. Every build an API acknowledged must end succeeded
// exactly once under the id it was given, never two copies of one build
// may run at once (counted from the host), and nothing may be stuck.

// sentinelFleet starts the set, two APIs and two workers through it, and
// returns the fleet and the APIs' base URLs.
func sentinelFleet(t *testing.T) (*fleet, *testenv.Sentinel, []string) {
	f, s := onSentinel(t)
	second := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	f.start("api", "api1")
	f.start("api", "api2", "PKGFLEET_HTTP_LISTEN", second)
	w1, w2 := f.start("worker", "w1"), f.start("worker", "w2")
	urls := []string{f.url, "http://" + second}
	for _, u := range urls {
		testenv.Eventually(t, 30*time.Second, "API "+u+" to be ready", func() bool {
			resp, err := f.client.Get(u + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
	for _, w := range []*proc{w1, w2} {
		testenv.Eventually(t, 60*time.Second, "the workers to be ready", func() bool { return w.logged("worker ready") })
	}
	return f, s, urls
}

// onSentinel is setup (with settings) for a fleet that reaches Redis
// through a Sentinel set (testenv.StartSentinel) with the durability step
// on (WAIT after the writes that must survive a failover); f.rdb follows
// the master too. Nothing is started but the set.
func onSentinel(t *testing.T, settings ...string) (*fleet, *testenv.Sentinel) {
	s := testenv.StartSentinel(t)
	return sentinelSettings(t, s, settings...), s
}

// sentinelSettings is setup (with settings) for a fleet on the set s.
func sentinelSettings(t *testing.T, s *testenv.Sentinel, settings ...string) *fleet {
	f := setup(t, append([]string{
		"PKGFLEET_REDIS_SENTINELADDRESSES", s.Addresses(),
		"PKGFLEET_REDIS_SENTINELMASTER", testenv.SentinelMaster,
		// 4 x W below the workers' T (4s here, see child).
		"PKGFLEET_REDIS_WAITTIMEOUT", "500ms"}, settings...)...)
	f.rdb.Close()
	f.rdb = s.Client(t)
	return f
}

// killMaster kills the set's master (kill -9), waits until the sentinels
// promote a replica, restarts the old master and waits until it is back
// as a replica: what "Redis killed" means for a fleet on Sentinel.
func killMaster(t *testing.T, s *testenv.Sentinel) {
	t.Helper()
	old, err := s.Master(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	old.Signal(syscall.SIGKILL)
	old.Wait()
	killed := time.Now()
	testenv.Eventually(t, time.Minute, "a replica to be promoted", func() bool {
		m, err := s.Master(context.Background())
		return err == nil && m != old
	})
	t.Logf("master %s killed; a replica promoted after %s", old.Addr, time.Since(killed).Round(100*time.Millisecond))
	old.Start(t)
	testenv.Eventually(t, time.Minute, "the old master to come back as a replica", func() bool { return old.Role() == "slave" })
}

// redisSetup is one way a fault test's fleet reaches Redis: the test runs
// once per way (issue 25: the chaos and partition tests through Sentinel
// as well).
type redisSetup struct {
	name string
	// fleet sets up a fleet with settings and starts its Redis; kill
	// kills Redis (the master, with Sentinel) with SIGKILL and returns
	// once Redis serves again.
	fleet func(t *testing.T, settings ...string) (f *fleet, kill func())
}

func redisSetups() []redisSetup {
	return []redisSetup{
		{"single", func(t *testing.T, settings ...string) (*fleet, func()) {
			f := setup(t, settings...)
			f.startRedis()
			return f, func() { f.stopRedis(syscall.SIGKILL); f.startRedis() }
		}},
		{"sentinel", func(t *testing.T, settings ...string) (*fleet, func()) {
			f, s := onSentinel(t, settings...)
			return f, func() { killMaster(t, s) }
		}},
	}
}

// acked is a build an API acknowledged (202), as it was acknowledged.
type acked struct {
	id           int64
	builder, sha string
}

// runAt asks the API at base to build builder's head, once: the build on
// a 202, else the status (0: no answer).
func (f *fleet) runAt(base, builder string) (*registry.Build, int) {
	req, _ := http.NewRequest("POST", base+"/api/v1/sources/py/git-builders/"+builder+"/run", bytes.NewReader([]byte("{}")))
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, 0
	}
	defer resp.Body.Close()
	var out struct{ Builds []registry.Build }
	if resp.StatusCode != http.StatusAccepted {
		return nil, resp.StatusCode
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.Builds) != 1 {
		f.t.Fatalf("run %s: %v %+v", builder, err, out)
	}
	return &out.Builds[0], resp.StatusCode
}

// A master killed with SIGKILL mid-burst, restarted once builds run
// again: it rejoins as a replica of the new master.
func TestMasterKilledMidBurstLosesNoAcknowledgedBuildAndRunsOneCopy(t *testing.T) {
	t.Parallel()
	failoverBurst(t, 1, func(s *testenv.Sentinel, old *testenv.Node) func() {
		old.Signal(syscall.SIGKILL)
		old.Wait()
		return func() { old.Start(t) }
	})
}

// A master frozen (SIGSTOP) for longer than the sentinels' down-after
// and the slot lease, then resumed: its clients' connections hang instead
// of failing, and once resumed it still believes it is the master until
// the sentinels demote it.
func TestMasterFrozenPastTheLeaseComesBackAsAReplicaAndRunsOneCopy(t *testing.T) {
	t.Parallel()
	failoverBurst(t, 2, func(s *testenv.Sentinel, old *testenv.Node) func() {
		frozen := time.Now()
		old.Signal(syscall.SIGSTOP)
		return func() {
			testenv.Eventually(t, time.Minute, "a replica to be promoted and the slot lease (6s) to pass", func() bool {
				m, err := s.Master(context.Background())
				return err == nil && m != old && time.Since(frozen) > 7*time.Second
			})
			old.Signal(syscall.SIGCONT)
		}
	})
}

// failoverBurst starts the fleet, queues a burst, applies fault to the
// master once builds run (fault returns how to heal it, called once
// builds start again), calls the APIs during the failover, and checks
// what the issue asks of every failover: every acknowledged build ends
// succeeded under the id it was given, one copy at a time, nothing stuck;
// and the old master ends a replica. tag sets the builds' sleep times
// apart from those of tests that run in parallel (copies are counted by
// their command line, host-wide).
func failoverBurst(t *testing.T, tag int, fault func(*testenv.Sentinel, *testenv.Node) (heal func())) {
	f, s, urls := sentinelFleet(t)
	// A burst of 8 builds of about 6s, 4 slots in the fleet; and builders
	// for the API calls made during the failover. make bench runs the
	// issue's 40 builds of 10s (PKGFLEET_FAILOVER_BURST=40x10); this one
	// keeps make test short.
	burst, sleep := 8, 6
	if v := os.Getenv("PKGFLEET_FAILOVER_BURST"); v != "" {
		if _, err := fmt.Sscanf(v, "%dx%d", &burst, &sleep); err != nil || burst < 2 || burst > 99 || sleep < 1 {
			t.Fatalf("PKGFLEET_FAILOVER_BURST=%q: want BUILDSxSECONDS, 2 to 99 builds (e.g. 40x10)", v)
		}
	}
	const calls = 6
	secs := map[string]string{}
	var names []string
	for i := range burst {
		n := fmt.Sprint("b", i)
		secs[n], names = fmt.Sprintf("%d.%d%02d", sleep, tag, i+1), append(names, n)
	}
	for i := range calls {
		n := fmt.Sprint("c", i)
		secs[n], names = fmt.Sprintf("2.%d%02d", tag, i+1), append(names, n)
	}
	f.builders(secs)
	counted := map[string]*copies{}
	for n, sec := range secs {
		counted[n] = countCopies(t, sec)
	}
	var acks []acked
	start := time.Now()
	for i := range burst {
		b, code := f.runAt(urls[i%2], names[i])
		if b == nil {
			t.Fatalf("run %s before the failover: %d", names[i], code)
		}
		acks = append(acks, acked{b.ID, b.Builder, b.SHA})
	}
	// The fault comes while builds run: two of them are in their sleep.
	testenv.Eventually(t, 2*time.Minute, "two builds to run", func() bool {
		n := 0
		for _, c := range counted {
			n += int(c.now.Load())
		}
		return n >= 2
	})

	old, err := s.Master(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	faulted := time.Now()
	heal := fault(s, old)
	t.Logf("master %s faulted %s into the burst", old.Addr, faulted.Sub(start).Round(time.Millisecond))

	// API calls during the failover, one every 300ms, alternating APIs,
	// until builds start again: each is acknowledged (and must be kept)
	// or refused with 503 (the CLI asks again); no answer is counted too.
	var refused, unanswered int
	var firstStart time.Duration
	for i := 0; firstStart == 0 && time.Since(faulted) < 90*time.Second; i++ {
		if i < calls {
			b, code := f.runAt(urls[i%2], fmt.Sprint("c", i))
			switch {
			case b != nil:
				acks = append(acks, acked{b.ID, b.Builder, b.SHA})
			case code == http.StatusServiceUnavailable:
				refused++
			case code == 0:
				unanswered++
			default:
				t.Errorf("a run during the failover answered %d, want 202 or 503", code)
			}
		}
		for _, a := range acks {
			if b := f.build(a.id); b != nil && b.StartedAt != nil && b.StartedAt.After(faulted) {
				firstStart = b.StartedAt.Sub(faulted)
				break
			}
		}
		time.Sleep(300 * time.Millisecond) // the calls' pace, not a synchronisation
	}
	if firstStart == 0 {
		t.Fatal("no build started within 90s of the fault")
	}
	// BENCH: make bench prints this line (scripts/bench.sh).
	t.Logf("BENCH burst %dx%ds: master fault -> first new build start: %s; API calls during the failover: %d acknowledged, %d refused 503, %d unanswered (client timeout %s)",
		burst, sleep, firstStart.Round(time.Millisecond), len(acks)-burst, refused, unanswered, f.client.Timeout)
	if unanswered > 0 {
		t.Errorf("%d API calls got no answer during the failover; want 202 or 503", unanswered)
	}
	heal()
	testenv.Eventually(t, time.Minute, "the old master to come back as a replica", func() bool { return old.Role() == "slave" })

	checkAcknowledged(f, acks, counted, time.Since(start)+2*time.Minute)
}

// checkAcknowledged asserts that every acknowledged build ends succeeded
// within limit, under the builder and commit it was acknowledged as, and
// that no build ever ran as two copies at once.
func checkAcknowledged(f *fleet, acks []acked, counted map[string]*copies, limit time.Duration) {
	f.t.Helper()
	testenv.Eventually(f.t, limit, "every acknowledged build to finish", func() bool {
		for _, a := range acks {
			if b := f.build(a.id); b == nil || !registry.Terminal(b.Status) {
				return false
			}
		}
		return true
	})
	var ids []int64
	for _, a := range acks {
		b := f.build(a.id)
		f.t.Logf("build %d (%s): %s on %s, attempt %d (token %d)", a.id, a.builder, b.Status, b.Worker, b.Attempts, b.AttemptToken)
		if b.Builder != a.builder || b.SHA != a.sha {
			f.t.Errorf("build %d was acknowledged as %s@%s and now names %s@%s", a.id, a.builder, a.sha, b.Builder, b.SHA)
		}
		if b.Status != registry.StatusSucceeded {
			f.t.Errorf("build %d (%s): %s after %d attempts: %s", a.id, a.builder, b.Status, b.Attempts, b.Detail)
		}
		if slices.Contains(ids, a.id) {
			f.t.Errorf("build id %d was acknowledged twice", a.id)
		}
		ids = append(ids, a.id)
	}
	for n, c := range counted {
		if m := c.max.Load(); m > 1 {
			f.t.Errorf("builder %s: %d copies of its build ran at once", n, m)
		}
	}
}
