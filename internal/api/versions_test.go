package api

import (
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
