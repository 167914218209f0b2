package e2e

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/roster"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func TestWorkerReportsWhatItBuildsToTheFleetList(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	var w roster.Worker
	testenv.Eventually(t, 30*time.Second, "the worker's first heartbeat", func() bool {
		var resp struct{ Workers []roster.Worker }
		json.Unmarshal(f.do("GET", "/api/v1/workers", nil, 200), &resp)
		if len(resp.Workers) == 1 {
			w = resp.Workers[0]
		}
		return len(resp.Workers) == 1
	})
	r, py := w.Languages[registry.LangR], w.Languages[registry.LangPython]
	if w.Name != t.Name() || w.Slots < 1 || w.Slots > 2 || r.Version == "" || py.Version == "" || r.Sandbox == "" {
		t.Fatalf("worker = %+v, want R and Python with versions and the sandbox mode, at most 2 slots", w)
	}
	if max, _ := sandbox.MaxUserNamespaces(); w.MaxUserNamespaces != max {
		t.Fatalf("max_user_namespaces = %d, the host says %d", w.MaxUserNamespaces, max)
	}
}
