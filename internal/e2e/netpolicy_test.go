package e2e

import (
	"net"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// By default neither the API nor a worker's clone reaches a git remote on
// loopback, even by name: the run is a 502 with the policy's line, a
// build of a given commit (no ls-remote in the API) fails at its clone,
// once (a retry would meet the same policy), with that line in its record
// and its log, and the port never sees a connection.
func TestACloneFromALoopbackRemoteIsRefusedByDefault(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	addr, seen := testenv.Silent(t)
	_, port, _ := net.SplitHostPort(addr)
	url := "https://localhost:" + port + "/x.git"
	f.do("POST", "/api/v1/sources", map[string]string{"name": "py", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/py/git-builders", map[string]any{"name": "inner", "url": url}, 201)
	body := string(f.do("POST", "/api/v1/sources/py/git-builders/inner/run", map[string]any{}, 502))
	if !strings.Contains(body, "git remote host localhost:"+port) || !strings.Contains(body, "is refused by the outbound policy (loopback); allow it with Git.AllowedHosts") {
		t.Errorf("run: %s", body)
	}
	b := f.wait(f.run("/api/v1/sources/py/git-builders/inner/rerun", map[string]string{"commit_sha": strings.Repeat("a", 40)}).ID)
	log := f.log(b.ID)
	if b.Status != registry.StatusFailed || b.Attempts != 1 || !strings.Contains(b.Detail, "is refused by the outbound policy (loopback)") ||
		!strings.Contains(log, "==> failed: clone "+url) || !strings.Contains(log, "is refused by the outbound policy (loopback)") {
		t.Fatalf("build: %s after %d attempts: %q\n%s", b.Status, b.Attempts, b.Detail, log)
	}
	if n := seen(); n != 0 {
		t.Errorf("the loopback port saw %d connections", n)
	}
}
