package index

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// redisStats is what INFO says of the server's work so far.
type redisStats struct {
	commands, outBytes int64
	cpu                time.Duration
	used               int64
}

func readRedisStats(t testing.TB, rdb redis.UniversalClient) redisStats {
	t.Helper()
	info, err := rdb.Info(context.Background(), "stats", "cpu", "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var s redisStats
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch {
		case k == "total_commands_processed":
			s.commands, _ = strconv.ParseInt(v, 10, 64)
		case k == "total_net_output_bytes":
			s.outBytes, _ = strconv.ParseInt(v, 10, 64)
		case k == "used_memory":
			s.used, _ = strconv.ParseInt(v, 10, 64)
		case k == "used_cpu_user" || k == "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			s.cpu += time.Duration(f * float64(time.Second))
		}
	}
	return s
}

// benchRecord is a finished build's record the size of the fleet's
// (about 1.2 KB, its log moved into the store).
func benchRecord(id int64, source, builder, pkg, ver string, ok bool) []byte {
	end := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(id) * time.Second)
	start := end.Add(-40 * time.Second)
	b := registry.Build{ID: id, Source: source, Builder: builder, Language: registry.LangR, Ref: "main", SHA: fmt.Sprintf("%040x", id),
		Trigger: registry.TriggerCommits, Status: registry.StatusSucceeded, Attempts: 1, MaxAttempts: 3, Worker: "worker-1",
		Sandbox: "user-namespace", SandboxTier: "full", CreatedAt: start.Add(-time.Second), StartedAt: &start, FinishedAt: &end,
		AttemptToken: id * 1000, Log: &registry.StoredLog{Package: pkg, Token: id * 1000, File: registry.LogFile, Size: 16 << 10, Stored: 3 << 10}}
	for _, p := range apiv1.PhaseOrder {
		b.SetPhase(p, 1234567*time.Microsecond)
	}
	if ok {
		b.Package, b.Version = pkg, ver
		b.Artifacts = []registry.Artifact{{File: pkg + "_" + ver + ".tar.gz", Kind: "source", Size: 48213, SHA256: strings.Repeat("ab", 32)}}
	} else {
		b.Status, b.Detail = registry.StatusFailed, "R CMD build exited with status 1"
	}
	data, _ := json.Marshal(&b)
	return data
}

// TestBenchIndexListingPerSource measures what one listing of a source
// (PACKAGES, the binary layouts, the simple index) reads from Redis, in
// one run: before, every build in Redis paged through and filtered
// (Registry.Builds with the source and status); after, the source's
// servable builds (Registry.Servable). Redis holds PKGFLEET_INDEX_BUILDS
// finished build records (100,000 by default, what retention keeps of a
// 10,000-builder fleet), 4 in 5 successful, over 1000 sources; the source
// listed has 1000 builds of 10 packages, two per version, so it serves
// 500. The records are written as a store from before the served keys,
// so the first listing's fill is measured too. PKGFLEET_BENCH=1 runs it.
func TestBenchIndexListingPerSource(t *testing.T) {
	if os.Getenv("PKGFLEET_BENCH") == "" {
		t.Skip("PKGFLEET_BENCH=1 runs the benchmark")
	}
	total := 100000
	if v := os.Getenv("PKGFLEET_INDEX_BUILDS"); v != "" {
		var err error
		if total, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	x, rdb := setup(t)
	sent := &testenv.CommandCounter{}
	sentN := func() int64 { n, _ := sent.Total(); return int64(n) }
	rdb.(*redis.Client).AddHook(sent)
	ctx := context.Background()
	const mine, mineBuilds, sources = "mine", 1000, 1000
	// The source's builds are spread through the others', as a fleet's
	// builds of many sources interleave.
	every := total / mineBuilds
	pipe := rdb.Pipeline()
	m := 0
	for id := int64(1); id <= int64(total); id++ {
		var rec []byte
		if id%int64(every) == 0 && m < mineBuilds {
			pkg := fmt.Sprintf("pkg%d", m%10)
			rec = benchRecord(id, mine, fmt.Sprint("b", m%10), pkg, fmt.Sprintf("1.%d", m/20), true)
			m++
		} else {
			s := fmt.Sprintf("s%04d", id%sources)
			rec = benchRecord(id, s, "b"+strconv.FormatInt(id%7, 10), "p"+s, fmt.Sprintf("1.%d", id/5000), id%5 != 4)
		}
		pipe.Set(ctx, "pkgfleet:build:"+strconv.FormatInt(id, 10), rec, 0)
		pipe.ZAdd(ctx, "pkgfleet:builds", redis.Z{Score: float64(id), Member: id})
		if id%1000 == 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	// A running API has counted the builds by status (its metrics and
	// reconciler do at once): the served keys' fill copies the counts.
	if _, err := x.Registry.CountBuildsByStatus(ctx); err != nil {
		t.Fatal(err)
	}
	before := func() ([]*registry.Build, error) { return everySucceeded(t, x.Registry, mine), nil }
	after := func() ([]*registry.Build, error) { return x.servable(ctx, mine) }

	// measure lists n times and reports per listing.
	measure := func(name string, n int, list func() ([]*registry.Build, error)) map[string][]int64 {
		var walls []time.Duration
		var served map[string][]int64
		s0, c0 := readRedisStats(t, rdb), sentN()
		for range n {
			t0 := time.Now()
			builds, err := list()
			if err != nil {
				t.Fatal(err)
			}
			served = servedIDs(Served(builds)[mine])
			walls = append(walls, time.Since(t0))
		}
		c1, s1 := sentN(), readRedisStats(t, rdb)
		slices.Sort(walls)
		// One INFO is counted in the server's commands and bytes (its
		// reply a few KB), none in the client's.
		t.Logf("BENCH index listing of one source (%d served of %d records) %s: n=%d wall p50=%s p99=%s max=%s; per listing: commands sent=%.1f commands run by redis (scripts' included)=%.1f redis bytes out=%.0f (%.2f MiB) redis CPU=%s",
			len(flatten(served)), total, name, n, walls[n/2].Round(10*time.Microsecond), walls[n*99/100].Round(10*time.Microsecond), walls[n-1].Round(10*time.Microsecond),
			float64(c1-c0)/float64(n), float64(s1.commands-s0.commands-1)/float64(n), float64(s1.outBytes-s0.outBytes)/float64(n), float64(s1.outBytes-s0.outBytes)/float64(n)/(1<<20),
			((s1.cpu - s0.cpu) / time.Duration(n)).Round(10*time.Microsecond))
		return served
	}
	old := measure("before (every build read, Registry.Builds)", 5, before)

	s0, c0, t0 := readRedisStats(t, rdb), sentN(), time.Now()
	if _, err := after(); err != nil {
		t.Fatal(err)
	}
	c1, s1 := sentN(), readRedisStats(t, rdb)
	// Sent: the listing twice, the count of builds (one script, the
	// counts exist), the first generation's script, the fill's scripts.
	scripts := c1 - c0 - 4
	t.Logf("BENCH index listing: the first listing fills the served keys of a store of %d records: wall=%s redis CPU=%s in %d scripts (%s each) running %d commands; used_memory +%.1f MiB (%.0f B per record)",
		total, time.Since(t0).Round(time.Millisecond), (s1.cpu - s0.cpu).Round(time.Millisecond), scripts, ((s1.cpu - s0.cpu) / time.Duration(scripts)).Round(10*time.Microsecond),
		s1.commands-s0.commands-1, float64(s1.used-s0.used)/(1<<20), float64(s1.used-s0.used)/float64(total))

	got := measure("after (the source's servable builds, Registry.Servable)", 200, after)
	if fmt.Sprint(got) != fmt.Sprint(old) || len(flatten(got)) != mineBuilds/2 {
		t.Fatalf("after serves %d builds, before %d (want %d): the listings differ", len(flatten(got)), len(flatten(old)), mineBuilds/2)
	}
}

func flatten(m map[string][]int64) []int64 {
	var out []int64
	for _, ids := range m {
		out = append(out, ids...)
	}
	return out
}
