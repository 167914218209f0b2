package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestBenchSourceBuildsListing measures a source's builds listing (the
// API's GET /api/v1/builds?source=, 100 builds) among 100,000 build
// records of 1000 sources, the source's every 100th, so that reading
// every build and reading the source's own list are compared: the same
// test runs on a tree without the source's list. The records are made by
// CreateBuild, the path every build takes. PKGFLEET_BENCH=1 runs it at
// its size (make bench); without it, 2000 records check that it runs.
// PKGFLEET_LIST_BUILDS sets the number of records.
func TestBenchSourceBuildsListing(t *testing.T) {
	total := 2000
	if os.Getenv("PKGFLEET_BENCH") != "" {
		total = 100000
	}
	if v := os.Getenv("PKGFLEET_LIST_BUILDS"); v != "" {
		total, _ = strconv.Atoi(v)
	}
	r, ctx := setup(t), context.Background()
	const mine = "mine"
	every := 100
	for i := 1; i <= total; i++ {
		src := fmt.Sprintf("s%04d", i%1000)
		if i%every == 0 {
			src = mine
		}
		if _, _, err := r.CreateBuild(ctx, &Build{Source: src, Builder: fmt.Sprint("b", i%7), Language: LangR, Ref: "main", SHA: fmt.Sprintf("%040x", i)}, ReuseActive); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.CountBuildsByStatus(ctx); err != nil {
		t.Fatal(err)
	}
	list := func() []*Build {
		out, err := r.Builds(ctx, Filter{Source: mine, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	first := time.Now()
	want := list() // fills what the listing reads, where it reads its own
	firstWall := time.Since(first)
	if len(want) != min(100, total/every) || want[0].Source != mine {
		t.Fatalf("listed %d builds, want %d of %s", len(want), min(100, total/every), mine)
	}
	const n = 50
	var walls []time.Duration
	c0 := redisCPU(t, r)
	for range n {
		t0 := time.Now()
		got := list()
		walls = append(walls, time.Since(t0))
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(want)
		if string(a) != string(b) {
			t.Fatal("two listings of unchanged builds differ")
		}
	}
	cpu := (redisCPU(t, r) - c0) / n
	slices.Sort(walls)
	// What the sources' lists of builds hold in Redis's memory (none on
	// a tree without them).
	var listed int64
	iter := r.rdb.Scan(ctx, 0, "pkgfleet:served:*:all", 1000).Iterator()
	for iter.Next(ctx) {
		listed += r.rdb.MemoryUsage(ctx, iter.Val(), 0).Val()
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("BENCH builds listing of one source (%d of its %d builds among %d records): first listing %s; then n=%d wall p50=%s p99=%s, redis CPU per listing %s; the sources' lists of builds: %.1f MiB (%.0f B per build)",
		len(want), total/every, total, firstWall.Round(time.Millisecond), n, walls[n/2].Round(10*time.Microsecond), walls[n*99/100].Round(10*time.Microsecond), cpu.Round(10*time.Microsecond),
		float64(listed)/(1<<20), float64(listed)/float64(total))
}
