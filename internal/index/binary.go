package index

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/version"
)

// R binaries are served in two layouts beside the source repository,
// which stays as it is:
//
//   - PPM's: /cran/<source>/__linux__/<platform>/latest is a repository
//     whose src/contrib holds, per package, the binary built for the
//     platform and for the asking R's x.y (from its User-Agent, as PPM
//     reads it), else the source tarball, so install.packages always
//     works and compiles only what has no binary;
//   - R 4.6's: /cran/<source>/bin/linux/<platform>/contrib/<x.y> holds only
//     binaries built for that platform and R x.y.
//
// The platform is the building worker's os-release ID-VERSION_ID
// ("debian-12"). A binary is never served to another platform, R x.y or
// architecture than it was built for.
func (x *Index) binaryRoutes(h func(string, func(http.ResponseWriter, *http.Request) error)) {
	const ppm = "GET /cran/{source}/__linux__/{platform}/latest/src/contrib/"
	h(ppm+"PACKAGES", x.binaryPackages(false, true))
	h(ppm+"PACKAGES.gz", x.binaryPackages(true, true))
	h(ppm+"{file}", x.binaryFile(true))
	h(ppm+"Archive/{pkg}/{file}", x.cranFile(true)) // older versions: their sources
	const r46 = "GET /cran/{source}/bin/linux/{platform}/contrib/{rversion}/"
	h(r46+"PACKAGES", x.binaryPackages(false, false))
	h(r46+"PACKAGES.gz", x.binaryPackages(true, false))
	h(r46+"{file}", x.binaryFile(false))
}

// want is what one R can install: binaries built for Platform with R
// RVersion (x.y), and, when known, for Arch (R's platform triplet, as
// in its binaries' names).
type want struct {
	Platform, RVersion, Arch string
}

func (w want) takes(a registry.Artifact) bool {
	return a.Kind == "binary" && w.RVersion != "" && a.Platform == w.Platform && a.RVersion == w.RVersion &&
		(w.Arch == "" || strings.HasSuffix(a.File, "_R_"+w.Arch+".tar.gz"))
}

// userAgentR reads R's version and platform triplet from its User-Agent,
// "R (4.2.2 x86_64-pc-linux-gnu x86_64 linux-gnu)", also when another
// client wraps it ("RStudio Server (…); R (4.2.2 …)").
var userAgentR = regexp.MustCompile(`(?:^|[\s;])R \((\d+)\.(\d+)\.\d+\S*\s+(\S+)`)

// wantFor is what the request's R can install on platform ("": its
// User-Agent names no R, so it gets sources only); rversion, when not
// "", is the layout's own R x.y, which the User-Agent cannot change.
func wantFor(r *http.Request, platform, rversion string) want {
	w := want{Platform: platform, RVersion: rversion}
	if m := userAgentR.FindStringSubmatch(r.UserAgent()); m != nil {
		if w.RVersion == "" {
			w.RVersion = m[1] + "." + m[2]
		}
		if w.RVersion == m[1]+"."+m[2] {
			w.Arch = m[3]
		}
	}
	return w
}

// pick chooses what each package's entry serves to w. With fallback
// (PPM's layout), the newest version: the newest build of it with a binary
// w takes, else its newest build's source tarball. Without (R 4.6's
// binary-only layout), the newest version with a binary w takes.
func pick(builds []*registry.Build, w want, fallback bool) map[string]cranEntry {
	byPkg := map[string][]*registry.Build{}
	for _, b := range builds {
		byPkg[b.Package] = append(byPkg[b.Package], b)
	}
	out := map[string]cranEntry{}
	for pkg, list := range byPkg {
		// Newest version first; within a version, newest build first.
		sortBuilds(list)
		var source *cranEntry
		for i, b := range list {
			if fallback && b.Version != list[0].Version {
				break
			}
			if a, ok := binaryFor(b, w); ok {
				out[pkg] = cranEntry{b, a}
				break
			}
			if a, ok := artifactOfKind(b, "source"); ok && fallback && source == nil {
				source = &cranEntry{list[i], a}
			}
		}
		if _, ok := out[pkg]; !ok && source != nil {
			out[pkg] = *source
		}
	}
	return out
}

func binaryFor(b *registry.Build, w want) (registry.Artifact, bool) {
	for _, a := range b.Artifacts {
		if w.takes(a) {
			return a, true
		}
	}
	return registry.Artifact{}, false
}

func sortBuilds(list []*registry.Build) {
	sortBuildsBy(list, func(a, b *registry.Build) bool {
		if c := version.Compare(a.Version, b.Version); c != 0 {
			return c > 0
		}
		return a.ID > b.ID
	})
}

// binaryEntries is what the request is served from source's builds.
func (x *Index) binaryEntries(r *http.Request, fallback bool) (map[string]cranEntry, want, error) {
	src, err := x.source(r, registry.TypeGit)
	if err != nil {
		return nil, want{}, err
	}
	builds, err := x.servable(r.Context(), src.Name)
	if err != nil {
		return nil, want{}, err
	}
	w := wantFor(r, r.PathValue("platform"), r.PathValue("rversion"))
	return pick(builds, w, fallback), w, nil
}

func (x *Index) binaryPackages(gz, fallback bool) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		entries, _, err := x.binaryEntries(r, fallback)
		if err != nil {
			return err
		}
		list := make([]cranEntry, 0, len(entries))
		for _, e := range entries {
			list = append(list, e)
		}
		// What is listed depends on the asking R (PPM's layout): caches
		// must not hand one R's answer to another.
		w.Header().Set("Vary", "User-Agent")
		return x.writePACKAGES(w, r, gz, list)
	}
}

// binaryFile serves <pkg>_<version>.tar.gz, the name install.packages
// asks for, as the entry PACKAGES listed for the same R: its binary or
// its source tarball.
func (x *Index) binaryFile(fallback bool) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		file := r.PathValue("file")
		pkg, ver, ok := strings.Cut(strings.TrimSuffix(file, ".tar.gz"), "_")
		if !ok || !strings.HasSuffix(file, ".tar.gz") {
			return notFound("no such file %s", file)
		}
		entries, wt, err := x.binaryEntries(r, fallback)
		if err != nil {
			return err
		}
		e, ok := entries[pkg]
		if !ok || e.b.Version != ver {
			return notFound("no %s for R %s on %s", file, wt.RVersion, wt.Platform)
		}
		w.Header().Set("Vary", "User-Agent")
		return x.serve(w, r, e.b, e.a.File)
	}
}
