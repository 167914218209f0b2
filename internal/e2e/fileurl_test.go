package e2e

import (
	"encoding/json"
	"html"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestAPIAcceptsAnEncodedFileURLAndShowsItDecoded: a repository under a
// path with a space and a '#' is added by its percent-encoded file://
// URL (the API reads its DESCRIPTION through git with it), kept as given
// in the API, and shown decoded on the builds page; the unencoded URL is
// refused with the API's reason.
func TestAPIAcceptsAnEncodedFileURLAndShowsItDecoded(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	repo := filepath.Join(testenv.SharedDir(t), "my work", "hello#fleet")
	if err := os.MkdirAll(filepath.Dir(repo), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(versionedRepo(t, "r/hellofleet", "DESCRIPTION"), repo); err != nil {
		t.Fatal(err)
	}
	encoded := (&url.URL{Scheme: "file", Path: repo}).String()
	f.do("POST", "/api/v1/sources", map[string]string{"name": "spaced", "type": "git"}, 201)

	refused := string(f.do("POST", "/api/v1/sources/spaced/git-builders", map[string]any{"url": "file://" + repo}, 400))
	if !strings.Contains(refused, "spaces") {
		t.Errorf("the unencoded URL's refusal does not say why: %s", refused)
	}
	var bl registry.Builder
	if err := json.Unmarshal(f.do("POST", "/api/v1/sources/spaced/git-builders", map[string]any{"url": encoded, "branch": "main"}, 201), &bl); err != nil {
		t.Fatal(err)
	}
	if bl.Name != "hellofleet" || bl.URL != encoded {
		t.Fatalf("builder %q with url %q, want hellofleet (read from DESCRIPTION through git) and %q", bl.Name, bl.URL, encoded)
	}

	page := scrape(t, f.api.URL+"/")
	if !strings.Contains(html.UnescapeString(page), "<code>file://"+repo+"</code>") {
		t.Errorf("the builds page does not show file://%s decoded:\n%s", repo, page)
	}
}
