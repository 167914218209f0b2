package index

import (
	"net/http/httptest"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

func rBuild(id int64, pkg, ver string, binaries ...registry.Artifact) *registry.Build {
	arts := []registry.Artifact{{File: pkg + "_" + ver + ".tar.gz", Kind: "source"}}
	for _, a := range binaries {
		a.Kind = "binary"
		a.File = pkg + "_" + ver + "_R_x86_64-pc-linux-gnu.tar.gz"
		arts = append(arts, a)
	}
	return &registry.Build{ID: id, Package: pkg, Version: ver, Artifacts: arts}
}

// The index serves a binary only to the R x.y, platform and architecture
// it was built for; PPM's layout falls back to the newest version's source
// tarball, R 4.6's binary-only layout to the newest version that has one.
func TestBinaryIsServedOnlyToTheRAndPlatformItWasBuiltFor(t *testing.T) {
	t.Parallel()
	deb42 := registry.Artifact{Platform: "debian-12", RVersion: "4.2"}
	deb44 := registry.Artifact{Platform: "debian-12", RVersion: "4.4"}
	builds := []*registry.Build{
		rBuild(1, "old", "1.0", deb42),
		rBuild(2, "old", "2.0"),        // newest version: no binary
		rBuild(3, "two", "1.0", deb42), // an R 4.2 worker's build
		rBuild(4, "two", "1.0", deb44), // the same commit on an R 4.4 worker
		rBuild(5, "other", "1.0", registry.Artifact{Platform: "ubuntu-24.04", RVersion: "4.2"}),
	}
	for _, c := range []struct {
		name     string
		w        want
		fallback bool
		served   map[string]string // package → file served
	}{
		{"R 4.2 on debian-12, PPM", want{"debian-12", "4.2", "x86_64-pc-linux-gnu"}, true, map[string]string{
			"old": "old_2.0.tar.gz", "two": "two_1.0_R_x86_64-pc-linux-gnu.tar.gz", "other": "other_1.0.tar.gz"}},
		{"R 4.4 on debian-12, PPM", want{"debian-12", "4.4", ""}, true, map[string]string{
			"old": "old_2.0.tar.gz", "two": "two_1.0_R_x86_64-pc-linux-gnu.tar.gz", "other": "other_1.0.tar.gz"}},
		{"R 4.3: no binary anywhere", want{"debian-12", "4.3", ""}, true, map[string]string{
			"old": "old_2.0.tar.gz", "two": "two_1.0.tar.gz", "other": "other_1.0.tar.gz"}},
		{"no R in the User-Agent", want{"debian-12", "", ""}, true, map[string]string{
			"old": "old_2.0.tar.gz", "two": "two_1.0.tar.gz", "other": "other_1.0.tar.gz"}},
		{"another architecture", want{"debian-12", "4.2", "aarch64-unknown-linux-gnu"}, true, map[string]string{
			"old": "old_2.0.tar.gz", "two": "two_1.0.tar.gz", "other": "other_1.0.tar.gz"}},
		{"R 4.6 layout, 4.2", want{"debian-12", "4.2", ""}, false, map[string]string{
			"old": "old_1.0_R_x86_64-pc-linux-gnu.tar.gz", "two": "two_1.0_R_x86_64-pc-linux-gnu.tar.gz"}},
		{"R 4.6 layout, ubuntu", want{"ubuntu-24.04", "4.2", ""}, false, map[string]string{
			"other": "other_1.0_R_x86_64-pc-linux-gnu.tar.gz"}},
	} {
		got := pick(builds, c.w, c.fallback)
		if len(got) != len(c.served) {
			t.Errorf("%s: served %d packages, want %d", c.name, len(got), len(c.served))
		}
		for pkg, file := range c.served {
			e, ok := got[pkg]
			if !ok || e.a.File != file {
				t.Errorf("%s: %s served %q, want %q", c.name, pkg, e.a.File, file)
				continue
			}
			if e.a.Kind == "binary" && (e.a.RVersion != c.w.RVersion || e.a.Platform != c.w.Platform) {
				t.Errorf("%s: %s served a binary for R %s on %s", c.name, pkg, e.a.RVersion, e.a.Platform)
			}
		}
	}
	// The binary of the R 4.4 worker is build 4's, of R 4.2 build 3's.
	if e := pick(builds, want{"debian-12", "4.4", ""}, true)["two"]; e.b.ID != 4 {
		t.Errorf("R 4.4 got build %d's binary, want build 4's", e.b.ID)
	}
}

// R's User-Agent names its version and platform; a layout's own R x.y
// (R 4.6's path) is never replaced by the User-Agent's.
func TestWantReadsTheRVersionFromTheUserAgent(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		ua, rversion string
		want         want
	}{
		{"R (4.2.2 x86_64-pc-linux-gnu x86_64 linux-gnu)", "", want{"debian-12", "4.2", "x86_64-pc-linux-gnu"}},
		{"RStudio Server (2023.3.0.386); R (4.3.1 x86_64-pc-linux-gnu x86_64 linux-gnu)", "", want{"debian-12", "4.3", "x86_64-pc-linux-gnu"}},
		{"curl/7.88.1", "", want{"debian-12", "", ""}},
		{"libcurl/7.88.1 R (4.2.2 x86_64-pc-linux-gnu)", "4.4", want{"debian-12", "4.4", ""}},
		{"", "4.2", want{"debian-12", "4.2", ""}},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("User-Agent", c.ua)
		if got := wantFor(r, "debian-12", c.rversion); got != c.want {
			t.Errorf("User-Agent %q, layout R %q: %+v, want %+v", c.ua, c.rversion, got, c.want)
		}
	}
}

// A linux_<arch> wheel (compiled, not repaired to manylinux) is listed
// only under the platform it was built on; portable wheels everywhere.
func TestLocalLinuxWheelIsListedOnlyUnderItsPlatform(t *testing.T) {
	t.Parallel()
	local := registry.Artifact{Kind: "wheel", File: "demo-1.0-cp311-cp311-linux_x86_64.whl", Platform: "debian-12",
		Tags: []string{"cp311-cp311-linux_x86_64"}}
	old := registry.Artifact{Kind: "wheel", File: "demo-1.0-cp311-cp311-linux_x86_64.whl"} // no tags recorded
	pure := registry.Artifact{Kind: "wheel", File: "demo-1.0-py3-none-any.whl", Tags: []string{"py3-none-any"}}
	for _, c := range []struct {
		a        registry.Artifact
		platform string
		served   bool
	}{
		{local, "", false}, {local, "debian-12", true}, {local, "ubuntu-24.04", false},
		{old, "", false}, {old, "debian-12", false},
		{pure, "", true}, {pure, "debian-12", true},
	} {
		if got := wheelServed(c.a, c.platform); got != c.served {
			t.Errorf("%s (platform %q) under %q: served %v, want %v", c.a.File, c.a.Platform, c.platform, got, c.served)
		}
	}
}
