package roster

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

func TestNamespacesPerBuildIsTheSandboxs(t *testing.T) {
	if NamespacesPerBuild != sandbox.NamespacesPerBuild {
		t.Fatalf("roster counts %d user namespaces per build, the sandbox makes %d", NamespacesPerBuild, sandbox.NamespacesPerBuild)
	}
}

func TestWorkersDropOffTheListWhenTheirHeartbeatStops(t *testing.T) {
	t.Parallel()
	rdb, _ := redisServer.DB(t)
	ctx := context.Background()
	if err := Heartbeat(ctx, rdb, Worker{Name: "a", Slots: 2}, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := Heartbeat(ctx, rdb, Worker{Name: "b", Slots: 4}, time.Hour); err != nil {
		t.Fatal(err)
	}
	list, err := List(ctx, rdb)
	if err != nil || len(list) != 2 || list[0].Name != "a" || list[1].Slots != 4 {
		t.Fatalf("list = %+v, %v", list, err)
	}
	testenv.Eventually(t, 5*time.Second, "a to expire", func() bool {
		list, _ := List(ctx, rdb)
		return len(list) == 1 && list[0].Name == "b"
	})
	if err := Remove(ctx, rdb, "b"); err != nil {
		t.Fatal(err)
	}
	if list, _ := List(ctx, rdb); len(list) != 0 {
		t.Fatalf("after Remove: %+v", list)
	}
}

func TestSlotsAreCappedByTheUserNamespaceLimit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ slots, max, want int }{
		{4, 15000, 4}, {4, 8, 4}, {4, 7, 3}, {8, 5, 2}, {4, -1, 4},
	} {
		got, err := CapSlots(c.slots, c.max)
		if got != c.want || (err != nil) != (c.want != c.slots) {
			t.Errorf("CapSlots(%d, %d) = %d, %v; want %d", c.slots, c.max, got, err, c.want)
		}
	}
	if _, err := CapSlots(2, 1); err == nil || !strings.Contains(err.Error(), "not even one") {
		t.Errorf("CapSlots(2, 1): %v", err)
	}
}

func TestBudgetFollowsPPMsFormula(t *testing.T) {
	t.Parallel()
	builders := registry.BuilderCounts{
		{"r", registry.TriggerTags}: 1, {"python", registry.TriggerTags}: 1,
		{"r", registry.TriggerCommits}: 2, {"python", ""}: 1, // no trigger: commits
	}
	sandboxed := map[string]Language{"r": {Sandbox: "user-namespace"}}
	workers := []Worker{
		{Name: "ok", Languages: sandboxed, Slots: 4, NamespacesNeeded: 8, MaxUserNamespaces: 100},
		{Name: "tight", Languages: sandboxed, Slots: 4, NamespacesNeeded: 8, MaxUserNamespaces: 6},
		{Name: "plain", Languages: map[string]Language{"r": {Sandbox: "unsandboxed"}}, Slots: 9},
	}
	b := NewBudget(builders, 25, workers)
	if b.Required != (2*25+3)*2 || b.FleetSlots != 8 || b.FleetNamespaces != 16 {
		t.Fatalf("budget = %+v, want required 106, 8 sandboxed slots needing 16", b)
	}
	if len(b.Warnings) != 1 || !strings.Contains(b.Warnings[0], "tight") {
		t.Fatalf("warnings = %v, want one about worker tight", b.Warnings)
	}
}

func TestNoWorkerForSaysWhichLanguageLacksAWorker(t *testing.T) {
	t.Parallel()
	r := []Worker{{Name: "w", Languages: map[string]Language{"r": {}}}}
	if msg := NoWorkerFor(r, "r"); msg != "" {
		t.Fatalf("R has a worker, got %q", msg)
	}
	if msg := NoWorkerFor(r, "python"); !strings.Contains(msg, "Python") {
		t.Fatalf("got %q", msg)
	}
	if msg := NoWorkerFor(nil, "r"); !strings.Contains(msg, "no worker is running") {
		t.Fatalf("got %q", msg)
	}
}
