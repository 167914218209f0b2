package retention

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/buildlog"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// sim is a fleet simulated through its build records: each build is
// written through the registry's own write path (CreateBuild,
// BeginAttempt, the attempt's last record write), finished at a
// simulated time, its log already moved into the store. No build runs.
type sim struct {
	t        testing.TB
	rdb      redis.UniversalClient
	reg      *registry.Registry
	builders int
	seq      int
}

// finish writes one finished build n of builder k at end: 4 in 5
// succeed; a builder's version moves on every 500 of its builds.
func (s *sim) finish(ctx context.Context, n, k int, end time.Time) error {
	builder := fmt.Sprintf("b%04d", k)
	b, _, err := s.reg.CreateBuild(ctx, &registry.Build{Source: "src", Builder: builder, Language: registry.LangR, Ref: "main",
		SHA: fmt.Sprintf("%040x", n), Trigger: registry.TriggerCommits, MaxAttempts: 3}, registry.ReuseUnlessFailed)
	if err != nil {
		return err
	}
	_, _, at, err := s.reg.BeginAttempt(ctx, b.ID, 1, "worker-1")
	if err != nil {
		return err
	}
	version := fmt.Sprintf("1.%d.0", n/s.builders/500)
	_, err = s.reg.UpdateBuildAs(ctx, at, func(b *registry.Build) error {
		start := end.Add(-40 * time.Second)
		b.Status, b.Attempts, b.Worker, b.Sandbox, b.SandboxTier = registry.StatusSucceeded, 1, "worker-1", "user-namespace", "full"
		b.StartedAt, b.FinishedAt = &start, &end
		for _, p := range apiv1.PhaseOrder {
			b.SetPhase(p, 1234567*time.Microsecond)
		}
		b.Log = &registry.StoredLog{Package: "pkg" + builder, Token: at.Token, File: registry.LogFile, Size: 16 << 10, Stored: 3 << 10}
		if n%5 == 4 {
			b.Status, b.Detail = registry.StatusFailed, "R CMD build exited with status 1"
			return nil
		}
		b.Package, b.Version = "pkg"+builder, version
		b.Artifacts = []registry.Artifact{{File: b.Package + "_" + version + ".tar.gz", Kind: "source", Size: 48213, SHA256: strings.Repeat("ab", 32)}}
		return nil
	})
	return err
}

// day writes builds finished through one simulated day, from 4
// goroutines (Redis's round trips overlap).
func (s *sim) day(ctx context.Context, start time.Time, builds int) error {
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	first := s.seq
	s.seq += builds
	for w := range workers {
		wg.Go(func() {
			for i := w; i < builds; i += workers {
				n := first + i
				end := start.Add(time.Duration(i) * 24 * time.Hour / time.Duration(builds))
				if err := s.finish(ctx, n, n%s.builders, end); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// usedMemory is Redis's used_memory.
func usedMemory(t testing.TB, rdb redis.UniversalClient) int64 {
	used, _, err := redisconn.Memory(context.Background(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	return used
}

// TestFleetMemoryStaysFlatAfterTheRetentionHorizon simulates a fleet
// through PKGFLEET_RETENTION_BUILDS builds (20,000 by default; make
// bench runs 1,000,000) over 100 days, a retention pass after each day
// (KeepFor 10 days, the last 5 builds per builder, served builds): after
// the horizon, the records Redis holds and its used_memory stay flat.
// It runs alone (not parallel) so that used_memory is its own.
func TestFleetMemoryStaysFlatAfterTheRetentionHorizon(t *testing.T) {
	total := 20000
	if v := os.Getenv("PKGFLEET_RETENTION_BUILDS"); v != "" {
		var err error
		if total, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	const days, horizon = 100, 10
	ctx := context.Background()
	rdb, _ := rds.DB(t)
	reg := registry.New(rdb)
	if _, err := reg.CreateSource(ctx, registry.Source{Name: "src", Type: registry.TypeGit}); err != nil {
		t.Fatal(err)
	}
	st, err := store.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{t: t, rdb: rdb, reg: reg, builders: min(1000, max(total/100, 10))}
	r := &Retainer{Registry: reg, Logs: &buildlog.Logs{Registry: reg, Store: st}, Redis: rdb,
		Policy: Policy{KeepBuilds: 5, KeepFor: horizon * 24 * time.Hour}, Log: testenv.Logger(t)}
	base := usedMemory(t, rdb)
	start := time.Now().UTC().Add(-days * 24 * time.Hour).Truncate(time.Hour)
	began := time.Now()
	var passTime time.Duration
	type point struct {
		records int64
		used    int64
	}
	var after []point
	perDay := total / days
	for d := range days {
		if err := s.day(ctx, start.Add(time.Duration(d)*24*time.Hour), perDay); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if _, err := r.Pass(ctx, start.Add(time.Duration(d+1)*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		passTime += time.Since(t0)
		records, err := rdb.ZCard(ctx, "pkgfleet:builds").Result()
		if err != nil {
			t.Fatal(err)
		}
		used := usedMemory(t, rdb) - base
		if d%10 == 9 || d == horizon {
			t.Logf("BENCH retention day=%d builds=%d records=%d redis_used_delta=%.1fMiB bytes_per_record=%.0f elapsed=%s passes=%s", d+1, s.seq, records, float64(used)/(1<<20), float64(used)/float64(records), time.Since(began).Round(time.Second), passTime.Round(time.Second))
		}
		if d > horizon {
			after = append(after, point{records, used})
		}
	}
	perBuild, _, err := reg.BytesPerBuild(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := after[0], after[0]
	for _, p := range after {
		lo.records, hi.records = min(lo.records, p.records), max(hi.records, p.records)
		lo.used, hi.used = min(lo.used, p.used), max(hi.used, p.used)
	}
	t.Logf("BENCH retention total builds=%d builders=%d in %s (retention passes %s); after the horizon records %d..%d, redis_used_delta %.1f..%.1fMiB; without retention %d records; pkgfleet_redis_bytes_per_build=%.0f",
		s.seq, s.builders, time.Since(began).Round(time.Second), passTime.Round(time.Second), lo.records, hi.records, float64(lo.used)/(1<<20), float64(hi.used)/(1<<20), s.seq, perBuild)
	// Flat: after the horizon the records stay within 10% of each other
	// (the served builds of new versions are all that may add), and so
	// does the memory, up to the allocator's own slack.
	if float64(hi.records) > 1.1*float64(lo.records) {
		t.Errorf("records after the horizon grew from %d to %d", lo.records, hi.records)
	}
	if float64(hi.used) > 1.25*float64(lo.used) {
		t.Errorf("Redis's used memory after the horizon grew from %d to %d bytes", lo.used, hi.used)
	}
	if want := int64(horizon+2) * int64(perDay); hi.records > want {
		t.Errorf("%d records kept, more than %d days of builds (%d)", hi.records, horizon+2, want)
	}
}

// TestAFinishedBuildCostsARecordNotItsLog measures Redis's memory per
// finished build with its log in Redis (before this retention) and with
// its log moved into the store, on 200 builds with a 16 KiB log each.
func TestAFinishedBuildCostsARecordNotItsLog(t *testing.T) {
	ctx := context.Background()
	rdb, _ := rds.DB(t)
	reg := registry.New(rdb)
	st, err := store.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := &buildlog.Logs{Registry: reg, Store: st}
	s := &sim{t: t, rdb: rdb, reg: reg, builders: 10}
	var text bytes.Buffer
	for i := 0; text.Len() < 16<<10; i++ {
		fmt.Fprintf(&text, "gcc -I/usr/share/R/include -DNDEBUG -fpic -O2 -c file%d.c -o file%d.o\n", i, i)
	}
	const n = 200
	base := usedMemory(t, rdb)
	var ids []int64
	for i := range n {
		if err := s.finish(ctx, i, i%s.builders, time.Now()); err != nil {
			t.Fatal(err)
		}
		id := int64(i + 1)
		ids = append(ids, id)
		if _, err := reg.UpdateBuild(ctx, id, func(b *registry.Build) error { b.Log = nil; return nil }); err != nil {
			t.Fatal(err)
		}
		if err := reg.AppendLog(ctx, id, text.Bytes(), 4<<20, "test"); err != nil {
			t.Fatal(err)
		}
	}
	before, _, err := reg.BytesPerBuild(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	usedBefore := usedMemory(t, rdb) - base
	for _, id := range ids {
		if moved, err := logs.Move(ctx, id); err != nil || !moved {
			t.Fatalf("move build %d's log: %v %v", id, moved, err)
		}
	}
	after, _, err := reg.BytesPerBuild(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	usedAfter := usedMemory(t, rdb) - base
	t.Logf("BENCH bytes per finished build (16 KiB log): MEMORY USAGE before=%.0f after=%.0f (%.1f×); used_memory delta per build before=%d after=%d",
		before, after, before/after, usedBefore/n, usedAfter/n)
	if after*4 > before || after > 4096 {
		t.Errorf("a finished build costs %.0f bytes after its log moved, %.0f before: want a record's size, under a quarter", after, before)
	}
}
