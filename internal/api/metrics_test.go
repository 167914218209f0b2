package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func TestMetricsScrapesDoNotWalkTheFleet(t *testing.T) {
	t.Parallel()
	h := setup(t, false, map[string]string{"PKGFLEET_HTTP_WRITERATE": "0"})
	h.many(100)
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(h.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("/metrics: %d", resp.StatusCode)
		}
		return string(body)
	}
	for _, sha := range []string{"a1", "b2", "c3"} {
		b, _, err := h.srv.Registry.CreateBuild(context.Background(), &registry.Build{Source: "src", Builder: "b000", Language: registry.LangR, Ref: "main", SHA: sha}, registry.ReuseActive)
		if err != nil {
			t.Fatal(err)
		}
		if sha != "c3" {
			if _, err := h.srv.Registry.UpdateBuild(context.Background(), b.ID, func(b *registry.Build) error { b.Status = registry.StatusWaiting; return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	counter := &testenv.CommandCounter{}
	h.rdb.AddHook(counter)
	first := scrape()
	if !strings.Contains(first, `pkgfleet_git_builders{language="r",trigger="commits"} 103`) {
		t.Fatalf("the first scrape does not count the 103 builders:\n%s", first)
	}
	if !strings.Contains(first, "pkgfleet_builds_waiting 2\n") {
		t.Fatalf("the first scrape does not count the 2 waiting builds:\n%s", first)
	}
	if !strings.Contains(first, "pkgfleet_redis_builds 3\n") || !strings.Contains(first, "pkgfleet_redis_memory_used_bytes ") ||
		strings.Contains(first, "pkgfleet_redis_memory_used_bytes 0\n") || !strings.Contains(first, "pkgfleet_redis_bytes_per_build 0\n") {
		t.Fatalf("the first scrape lacks Redis's memory, the 3 build records, or measures an unfinished build:\n%s", first)
	}
	walk, by := counter.Total()
	// Even a reading of the fleet reads counts, not records, but for
	// one page of the newest builds that pkgfleet_redis_bytes_per_build
	// samples (a bounded ZREVRANGE and its MGET).
	if by["hvals"] != 0 || by["zrevrange"] > 1 || by["mget"] > 1 {
		t.Fatalf("a reading of the fleet read every builder or build: %v", by)
	}
	counter.Reset()
	const scrapes = 20
	for range scrapes {
		scrape()
	}
	n, by := counter.Total()
	if by["hvals"] != 0 || by["zrevrange"] != 0 || by["mget"] != 0 {
		t.Fatalf("%d scrapes within the refresh read every builder or build again: %v", scrapes, by)
	}
	// What is left per scrape (asynq's queue sizes) does not grow with
	// the fleet: 100 more builders change nothing.
	per := n / scrapes
	for i := range 100 {
		if code, body := h.req("POST", "/api/v1/sources/src/git-builders", fmt.Sprintf(`{"name":"more%03d","url":"https://example.invalid/r"}`, i), ""); code != 201 {
			t.Fatalf("create builder: %d %s", code, body)
		}
	}
	counter.Reset()
	scrape()
	if again, by := counter.Total(); again > per {
		t.Fatalf("a scrape with 100 more builders sent %d Redis commands (%v), before %d", again, by, per)
	}
	t.Logf("one reading of the fleet: %d Redis commands; a scrape between readings: %d", walk, per)
}
