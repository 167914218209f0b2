package api

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestBenchOutboundWebhooks measures a burst of finished builds, each told
// to one hook: from the record that finishes a build to its delivery at a
// real receiver (the dispatcher at its default pass interval, 1s), the
// burst's wall time, and Redis commands per delivery; against its anchor,
// the same bodies POSTed one after another with net/http. make test runs
// it with 10 builds (it still works); PKGFLEET_BENCH=1 with 200.
//
// Not parallel: Redis's command count is this test's alone.
func TestBenchOutboundWebhooks(t *testing.T) {
	n := 10
	if os.Getenv("PKGFLEET_BENCH") != "" {
		n = 200
	}
	h := hookFixture(t, nil)
	rc := newReceiver(t)
	createHook(t, h, "/api/v1/sources/src/hooks", apiv1.NewHook{URL: rc.URL, Secret: outSecret, EveryBuild: true})
	ctx := context.Background()
	d := h.srv.Dispatcher()
	d.Owner += ":bench"
	d.Log = testenv.Logger(t)
	dctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(dctx) }()
	defer func() { stop(); <-done }()

	commands := func() int64 {
		info, err := h.rdb.Info(ctx, "stats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("INFO stats has no total_commands_processed")
		return 0
	}
	// The builds are made first; the burst is the records that finish them.
	var builds []*registry.Build
	for i := range n {
		b, _, err := h.srv.Registry.CreateBuild(ctx, &registry.Build{Source: "src", Builder: "pkg", Language: "r",
			Ref: "main", SHA: strings.Repeat("0", 32) + strconv.Itoa(10000000+i), Trigger: "manual", MaxAttempts: 1}, registry.ReuseActive)
		if err != nil {
			t.Fatal(err)
		}
		builds = append(builds, b)
	}
	c0 := commands()
	start := time.Now()
	finishedAt := map[int64]time.Time{}
	for _, b := range builds {
		if _, err := h.srv.Registry.UpdateBuild(ctx, b.ID, func(b *registry.Build) error { b.Status = registry.StatusSucceeded; return nil }); err != nil {
			t.Fatal(err)
		}
		finishedAt[b.ID] = time.Now()
	}
	got := rc.waitFor(t, n)
	wall := time.Since(start)
	c1 := commands()
	// The receiver's clock is this process's: latency = receipt - finish.
	var lat []time.Duration
	rc.mu.Lock()
	arrivals := append([]time.Time(nil), rc.at...)
	rc.mu.Unlock()
	for i, r := range got {
		key := r.header.Get("Idempotency-Key")
		id, _ := strconv.ParseInt(key[strings.IndexByte(key, '-')+1:], 10, 64)
		lat = append(lat, arrivals[i].Sub(finishedAt[id]))
	}
	slices.Sort(lat)
	if len(got) != n {
		t.Fatalf("the receiver got %d deliveries, want %d", len(got), n)
	}

	// The anchor: the same bodies POSTed one after another.
	client := &http.Client{}
	a0 := time.Now()
	for _, r := range got {
		resp, err := client.Post(rc.URL, "application/json", bytes.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	anchor := time.Since(a0)
	t.Logf("BENCH outbound webhooks, %d builds finished at once, one hook: finish->delivery p50=%s max=%s burst=%s redis-commands/delivery=%.1f; anchor: %d plain POSTs=%s",
		n, lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), wall.Round(time.Millisecond),
		float64(c1-c0)/float64(n), n, anchor.Round(time.Millisecond))
}
