package api

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// TestAFinishedBuildsLogIsServedFromTheStore: the log endpoint and the
// build's page read a running build's live tail from Redis and, once it
// finished and its log moved, the same bytes from the artifact store;
// the builds page states the retention policy.
func TestAFinishedBuildsLogIsServedFromTheStore(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	ctx := context.Background()
	reg := h.srv.Registry
	b, _, err := reg.CreateBuild(ctx, &registry.Build{Source: "src", Builder: "b", Language: registry.LangR, Ref: "main", SHA: strings.Repeat("c", 40)}, registry.ReuseUnlessFailed)
	if err != nil {
		t.Fatal(err)
	}
	set := func(status string) {
		if _, err := reg.UpdateBuild(ctx, b.ID, func(b *registry.Build) error { b.Status, b.AttemptToken = status, 7; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	set(registry.StatusRunning)
	text := "==> pkgfleet build, attempt 1\n* checking for file 'p/DESCRIPTION' ... OK\n"
	if err := reg.AppendLog(ctx, b.ID, []byte(text), 1<<20, "test"); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/api/v1/builds/%d/log", b.ID)
	if code, body := h.req("GET", path, "", ""); code != 200 || body != text {
		t.Fatalf("the running build's log: %d %q", code, body)
	}
	set(registry.StatusFailed)
	if moved, err := h.srv.logs().Move(ctx, b.ID); err != nil || !moved {
		t.Fatalf("move: %v %v", moved, err)
	}
	if live, _ := reg.Log(ctx, b.ID, 0); len(live) != 0 {
		t.Fatalf("Redis still holds the finished build's log")
	}
	if code, body := h.req("GET", path, "", ""); code != 200 || body != text {
		t.Fatalf("the finished build's log: %d %q, want %q", code, body, text)
	}
	if code, body := h.req("GET", path+"?offset=30", "", ""); code != 200 || body != text[30:] {
		t.Fatalf("the finished build's log from 30: %d %q", code, body)
	}
	if code, body, _ := h.page("GET", fmt.Sprintf("/builds/%d", b.ID), "", nil); code != 200 || !strings.Contains(body, "checking for file") {
		t.Fatalf("the build's page lacks its stored log: %d %.400s", code, body)
	}
	_, body, _ := h.page("GET", "/", "", nil)
	if want := "keeps the last 100 builds of each git-builder, every build whose artifacts an index serves, and every build that finished in the last 30 days"; !strings.Contains(body, want) {
		t.Fatalf("the builds page does not state the retention policy %q", want)
	}
}
