package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/roster"
)

// TestBuildsPageShowsAWorkersSandboxRefusal: a worker whose sandbox was
// refused reports tier none and the refusal's line, and the builds page
// shows that line under the tier, as sandbox check prints it.
func TestBuildsPageShowsAWorkersSandboxRefusal(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	refusal := "sandbox: the build user pkgfleet (uid 999, gid 995) cannot traverse /root (owner root:root, mode 0700) " +
		"on the way to /root/pkgfleet/var/tmp/pkgfleet-workspaces (Server.TempDir); remedy: set Server.TempDir to a directory pkgfleet can traverse"
	w := roster.Worker{Name: "refused", SandboxTier: "none", SandboxRefusal: refusal, Languages: map[string]roster.Language{}}
	if err := roster.Heartbeat(context.Background(), h.rdb, w, time.Minute); err != nil {
		t.Fatal(err)
	}
	code, body, _ := h.page("GET", "/", "", nil)
	if code != 200 || !strings.Contains(body, `<td>none<div class="bad sandbox-refusal">refused: `+refusal+`</div></td>`) {
		t.Errorf("the builds page (%d) does not show the worker's refusal under its tier:\n%s", code, body)
	}
}

// TestBuildsPageShowsAWorkersStoreRefusal: a worker whose artifact store
// failed its startup check takes no builds, and the builds page says why
// beside its slots.
func TestBuildsPageShowsAWorkersStoreRefusal(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	refusal := "S3 bucket artifacts at https://s3.example.org is not reachable and writable: api error AccessDenied: Access Denied"
	w := roster.Worker{Name: "no-store", SandboxTier: "full", StoreRefusal: refusal, Slots: 2, Languages: map[string]roster.Language{}}
	if err := roster.Heartbeat(context.Background(), h.rdb, w, time.Minute); err != nil {
		t.Fatal(err)
	}
	code, body, _ := h.page("GET", "/", "", nil)
	if code != 200 || !strings.Contains(body, `<div class="bad store-refusal">takes no builds: `+refusal+`</div>`) {
		t.Errorf("the builds page (%d) does not show the worker's store refusal:\n%s", code, body)
	}
}
