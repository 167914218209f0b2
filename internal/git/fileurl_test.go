package git

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestPercentEncodedFileURLsReachTheirRepository: a repository whose path
// has a space and characters URLs must escape is reached by its
// percent-encoded file:// URL, which git decodes itself, and shown decoded.
func TestPercentEncodedFileURLsReachTheirRepository(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git")
	dir := filepath.Join(t.TempDir(), "my work", "a#b%c?d+e&é")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.Git(t, dir, "init", "--quiet", "--initial-branch=main")
	sha := testenv.Commit(t, dir, map[string]string{"a": "a"}, "initial")
	encoded := (&url.URL{Scheme: "file", Path: dir}).String()
	if strings.ContainsAny(encoded, " #?") {
		t.Fatalf("the test's URL %q is not encoded", encoded)
	}
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	refs, err := c.LsRemote(context.Background(), encoded)
	if err != nil || refs.Branches["main"] != sha {
		t.Fatalf("LsRemote(%q) = %+v, %v; want main at %s", encoded, refs, err, sha)
	}
	if _, err := c.Clone(context.Background(), filepath.Join(t.TempDir(), "checkout"), CloneOptions{URL: encoded, SHA: sha, Depth: 1}); err != nil {
		t.Fatalf("Clone(%q): %v", encoded, err)
	}
	if got := apiv1.DisplayURL(encoded); got != "file://"+dir {
		t.Errorf("apiv1.DisplayURL(%q) = %q, want file://%s", encoded, got, dir)
	}
	for raw, want := range map[string]string{
		"file://" + dir:             "spaces",
		"file:///srv/a?b":           "percent-encode '?' and '#'",
		"file:///srv/a#b":           "percent-encode '?' and '#'",
		"file:///srv/a%0Ab":         "control characters",
		"file:///srv/a%zzb":         "not valid",
		"file://example.org/srv/a":  "must not name a host",
		"file:///srv/a%20b/../..%2": "not valid",
	} {
		if err := c.Policy.ValidateURL(raw); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateURL(%q) = %v, want an error containing %q", raw, err, want)
		}
	}
	for raw, want := range map[string]string{
		"https://example.org/a%20b.git": "https://example.org/a%20b.git", // only file:// paths are decoded
		"file:///srv/plain":             "file:///srv/plain",
	} {
		if got := apiv1.DisplayURL(raw); got != want {
			t.Errorf("apiv1.DisplayURL(%q) = %q, want %q", raw, got, want)
		}
	}
}
