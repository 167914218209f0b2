package fleettest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/roster"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func TestWorkersAndNamespacesDescribeTheLiveFleet(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	f.builder("tags1", registry.TriggerTags, 0)
	f.builder("tags2", registry.TriggerTags, 0)
	f.builder("head", registry.TriggerCommits, 0)
	f.worker("w1", 2)
	stop := f.worker("w2", 4)

	var resp struct{ Workers []roster.Worker }
	json.Unmarshal(f.do("GET", "/api/v1/workers", nil, 200), &resp)
	if len(resp.Workers) != 2 || resp.Workers[0].Name != "w1" || resp.Workers[1].Slots != 4 ||
		resp.Workers[0].Languages[registry.LangR].Version != "4.4.1" {
		t.Fatalf("workers = %+v", resp.Workers)
	}

	var ns struct {
		Budget  roster.Budget
		Workers []struct {
			Name   string
			Needed int
			OK     bool
		}
	}
	json.Unmarshal(f.do("GET", "/api/v1/namespaces", nil, 200), &ns)
	if ns.Budget.Required != (2*3+1)*2 || ns.Budget.TagBuilders != 2 || ns.Budget.CommitBuilders != 1 {
		t.Fatalf("budget = %+v, want ((2 × 3) + 1) × 2 = 14", ns.Budget)
	}
	// w2's 4 slots need 8 namespaces; its host allows 7.
	if len(ns.Workers) != 2 || !ns.Workers[0].OK || ns.Workers[1].OK || ns.Workers[1].Needed != 8 || len(ns.Budget.Warnings) != 1 {
		t.Fatalf("namespaces = %+v", ns)
	}

	// A stopped worker leaves the list at once.
	stop()
	json.Unmarshal(f.do("GET", "/api/v1/workers", nil, 200), &resp)
	if len(resp.Workers) != 1 || resp.Workers[0].Name != "w1" {
		t.Fatalf("after w2 stopped: %+v", resp.Workers)
	}
}

func TestQueuedBuildSaysWhenNoLiveWorkerCanBuildIt(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	dir, sha := testenv.Repo(t, map[string]string{"pyproject.toml": "[project]\nname='x'\n"})
	f.do("POST", "/api/v1/sources", map[string]string{"name": "py", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/py/git-builders", map[string]any{"name": "x", "url": "file://" + dir}, 201)
	var run struct{ Builds []registry.Build }
	json.Unmarshal(f.do("POST", "/api/v1/sources/py/git-builders/x/rerun", map[string]string{"commit_sha": sha}, 202), &run)
	id := run.Builds[0].ID
	detail := func() string {
		var b registry.Build
		json.Unmarshal(f.do("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil, 200), &b)
		return b.Detail
	}
	if d := detail(); !strings.Contains(d, "no worker is running") {
		t.Fatalf("detail with no worker = %q", d)
	}
	f.worker("r-only", 1) // builds R, not Python
	if d := detail(); !strings.Contains(d, "no live worker can build Python packages") {
		t.Fatalf("detail with an R-only worker = %q", d)
	}
	// The stored record is not changed by what the API shows.
	if b, _ := f.reg.Build(context.Background(), id); b.Detail != "" {
		t.Fatalf("stored detail = %q", b.Detail)
	}
}
