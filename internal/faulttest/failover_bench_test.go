package faulttest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// TestBenchDurability measures what the durability contract costs and
// what a failover costs (BENCHMARKS.md), in one run: on one replicated
// set (a master, two replicas, three sentinels), a Python build's push ->
// start p50 and the Redis commands per build, once through Sentinel (WAIT
// after the durable writes) and once on the master's address (no WAIT);
// then the time from the master's death to the first new build start,
// over 5 failovers. scripts/bench.sh runs it (PKGFLEET_BENCH=1).
func TestBenchDurability(t *testing.T) {
	if os.Getenv("PKGFLEET_BENCH") == "" {
		t.Skip("a benchmark: scripts/bench.sh runs it")
	}
	pushes := 20
	if n, err := strconv.Atoi(os.Getenv("PKGFLEET_PUSHES")); err == nil && n > 0 {
		pushes = n
	}
	for _, viaSentinel := range []bool{false, true} {
		s := testenv.StartSentinel(t)
		f, shas := benchFleet(t, s, viaSentinel, map[string]string{"p": "0.51"})
		sha := shas["p"]
		master, _ := s.Master(context.Background())
		direct := redis.NewClient(&redis.Options{Addr: master.Addr})
		before := commandStats(t, direct)
		var starts []time.Duration
		for range pushes {
			t0 := time.Now()
			id := f.rerun("p", sha)
			b := f.waitStatus(id, 2*time.Minute, func(b *registry.Build) bool { return b.Status == registry.StatusSucceeded }, "to succeed")
			starts = append(starts, b.StartedAt.Sub(t0))
		}
		after := commandStats(t, direct)
		direct.Close()
		mode := "master address, no WAIT"
		if viaSentinel {
			mode = "Sentinel, WAIT 1 replica"
		}
		slices.Sort(starts)
		per := func(name string) float64 { return float64(after[name]-before[name]) / float64(pushes) }
		var top []string
		for name := range after {
			if name != "total" && per(name) >= 5 {
				top = append(top, fmt.Sprintf("%s=%.0f", name, per(name)))
			}
		}
		slices.Sort(top)
		t.Logf("BENCH durability %s: pushes=%d push->start p50=%s p90=%s | Redis commands per build (server, idle polling included)=%.0f (%s), of which WAIT=%.1f",
			mode, pushes, starts[len(starts)/2].Round(time.Millisecond), starts[len(starts)*9/10].Round(time.Millisecond),
			per("total"), strings.Join(top, " "), per("wait"))
	}

	s := testenv.StartSentinel(t)
	secs := map[string]string{"f0": "3.901", "f1": "3.902", "f2": "3.903", "f3": "3.904"}
	f, shas := benchFleet(t, s, true, secs)
	var deaths []time.Duration
	for round := range 5 {
		// Two builds run (the worker's two slots) and two wait.
		var ids []int64
		for n, sha := range shas {
			ids = append(ids, f.rerun(n, sha))
		}
		testenv.Eventually(t, time.Minute, "builds to run", func() bool {
			for _, sec := range secs {
				if sleeping(sec) {
					return true
				}
			}
			return false
		})
		old, err := s.Master(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		old.Signal(syscall.SIGKILL)
		old.Wait()
		var first time.Duration
		testenv.Eventually(t, 2*time.Minute, "a build to start after the master's death", func() bool {
			for _, id := range ids {
				if b := f.build(id); b != nil && b.StartedAt != nil && b.StartedAt.After(killed) {
					first = b.StartedAt.Sub(killed)
					return true
				}
			}
			return false
		})
		deaths = append(deaths, first)
		old.Start(t)
		for _, id := range ids {
			f.waitStatus(id, 3*time.Minute, func(b *registry.Build) bool { return registry.Terminal(b.Status) }, "to finish")
		}
		testenv.Eventually(t, time.Minute, "the old master to be a replica", func() bool { return old.Role() == "slave" })
		s.WaitReady(t)
		t.Logf("failover %d: master death -> first new build start %s", round+1, first.Round(time.Millisecond))
	}
	sorted := slices.Clone(deaths)
	slices.Sort(sorted)
	t.Logf("BENCH failover: master death (SIGKILL, down-after %s) -> first new build start p50=%s over %d failovers (%v)",
		testenv.SentinelDownAfter, sorted[len(sorted)/2].Round(time.Millisecond), len(deaths), roundAll(deaths))
}

func roundAll(d []time.Duration) []string {
	var out []string
	for _, x := range d {
		out = append(out, x.Round(100*time.Millisecond).String())
	}
	return out
}

// benchFleet starts an API and a worker on s, through its sentinels or
// straight at its master, with a builder per name in secs (its build
// sleeps secs[name]), builds each once, and returns the fleet and the
// builders' commits.
func benchFleet(t *testing.T, s *testenv.Sentinel, viaSentinel bool, secs map[string]string) (*fleet, map[string]string) {
	master, err := s.Master(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PKGFLEET_REDIS_ADDRESS", master.Addr}
	if viaSentinel {
		env = []string{"PKGFLEET_REDIS_SENTINELADDRESSES", s.Addresses(),
			"PKGFLEET_REDIS_SENTINELMASTER", testenv.SentinelMaster, "PKGFLEET_REDIS_WAITTIMEOUT", "500ms"}
	}
	f := setup(t, env...)
	f.rdb.Close()
	f.rdb = s.Client(t)
	f.start("api", "api")
	w := f.start("worker", "w1")
	testenv.Eventually(t, 30*time.Second, "the API to be ready", f.ready)
	testenv.Eventually(t, 60*time.Second, "the worker to be ready", func() bool { return w.logged("worker ready") })
	f.builders(secs)
	shas := map[string]string{}
	for n := range secs {
		shas[n] = f.waitDone(f.run(n)).SHA
	}
	return f, shas
}

// rerun builds commit sha of builder name again once the last build
// finished: asked again while the API says the previous build's task is
// still stopping (its record is final a moment before asynq's task is).
func (f *fleet) rerun(name, sha string) int64 {
	f.t.Helper()
	var out []byte
	testenv.Eventually(f.t, 30*time.Second, "a rerun of "+name+" to be accepted", func() bool {
		var code int
		code, out = f.do("POST", "/api/v1/sources/py/git-builders/"+name+"/rerun", map[string]string{"commit_sha": sha})
		return code == 202
	})
	var resp struct{ Builds []registry.Build }
	if err := json.Unmarshal(out, &resp); err != nil || len(resp.Builds) != 1 {
		f.t.Fatalf("rerun %s: %v %s", name, err, out)
	}
	return resp.Builds[0].ID
}

// commandStats is the master's count of calls of each command (by its
// lower-case name) and of all commands ("total").
func commandStats(t *testing.T, rdb *redis.Client) map[string]int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats", "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"); ok {
			name, stats, _ := strings.Cut(rest, ":calls=")
			n, _ := strconv.ParseInt(strings.SplitN(stats, ",", 2)[0], 10, 64)
			out[name] = n
		}
		if rest, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			out["total"], _ = strconv.ParseInt(rest, 10, 64)
		}
	}
	return out
}
