package api

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// TestABranchBuildBelowAReleaseIsWarnedOf: pip picks the newest release
// over any development version below it, so the page says so; a release,
// or a development version above every release, is not warned of.
func TestABranchBuildBelowAReleaseIsWarnedOf(t *testing.T) {
	t.Parallel()
	releases := map[string]string{"attrs": "26.1.0"}
	build := func(v string) *registry.Build {
		return &registry.Build{Package: "attrs", Version: v, Status: registry.StatusSucceeded}
	}
	if w := versionWarning(build("0.1.dev1837"), releases); !strings.Contains(w, "below 26.1.0") {
		t.Errorf("0.1.dev1837: warning %q, want one naming 26.1.0", w)
	}
	for _, v := range []string{"26.1.1.dev70", "26.1.0", "25.0.0", "26.1.0.post1"} {
		if w := versionWarning(build(v), releases); w != "" {
			t.Errorf("%s: warning %q, want none", v, w)
		}
	}
	if w := versionWarning(&registry.Build{Package: "other", Version: "0.1.dev1", Status: registry.StatusSucceeded}, releases); w != "" {
		t.Errorf("a package without a release: warning %q", w)
	}
}

// TestNewestReleasesAreTheSourcesSuccessfulBuildsOnly: the releases a
// page warns against are the newest each package's successful builds of
// the source made; another source's, a failed build's and a development
// version are not.
func TestNewestReleasesAreTheSourcesSuccessfulBuildsOnly(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	ctx := context.Background()
	reg := h.srv.Registry
	for i, c := range []struct{ source, pkg, version, status string }{
		{"py", "attrs", "25.0.0", registry.StatusSucceeded},
		{"py", "attrs", "26.1.0", registry.StatusSucceeded},
		{"py", "attrs", "26.2.0.dev3", registry.StatusSucceeded},
		{"py", "attrs", "27.0.0", registry.StatusFailed},
		{"other", "attrs", "28.0.0", registry.StatusSucceeded},
		{"py", "six", "1.16.0", registry.StatusSucceeded},
	} {
		b, _, err := reg.CreateBuild(ctx, &registry.Build{Source: c.source, Builder: "b", Ref: "main", SHA: fmt.Sprintf("%040x", i)}, registry.ReuseActive)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.UpdateBuild(ctx, b.ID, func(b *registry.Build) error {
			b.Status, b.Package, b.Version = c.status, c.pkg, c.version
			b.Artifacts = []registry.Artifact{{Kind: "sdist", File: c.pkg + "-" + c.version + ".tar.gz"}}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := h.srv.newestReleases(ctx, "py")
	if want := map[string]string{"attrs": "26.1.0", "six": "1.16.0"}; err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("newest releases %v %v, want %v", got, err, want)
	}
}
