// Package index serves what pkgfleet built the way package managers read
// it: a CRAN-like repository per `git` source (src/contrib/PACKAGES,
// PACKAGES.gz, the tarballs, Archive/) for R's install.packages, with its
// R binaries beside it per platform (binary.go), and a PEP 503 simple
// index (with the PEP 691 JSON form) per `git-python` source for pip,
// with the wheels of one platform's own tag under that platform's URL.
//
// Which builds are served: for each package version, the newest successful
// build (for commit builders the newest commit wins); older builds stay
// reachable through the API by build id; a failed build never replaces a
// good artifact. The index is computed from the registry on each request,
// from the builds of the source it can serve (Registry.Servable, which
// keeps them per source), with artifact metadata cached by pkgmeta.
package index

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"sync"

	"github.com/pkgfleet/pkgfleet/internal/pkgmeta"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
)

// Index reads builds from the registry and files from the store.
type Index struct {
	Registry *registry.Registry
	Store    store.Artifacts
	// Redirect sends package downloads to a presigned URL when the store
	// makes them (Storage.S3Redirect).
	Redirect bool
	// Log hears of files a record names that are missing from the store.
	Log *slog.Logger

	mu    sync.Mutex
	cache map[string]pkgmeta.Fields // build id + file → metadata
}

// New returns an index.
func New(reg *registry.Registry, st store.Artifacts, log *slog.Logger) *Index {
	return &Index{Registry: reg, Store: st, Log: log, cache: map[string]pkgmeta.Fields{}}
}

// missing reports whether err says a file a record names is gone from
// the store (deleted behind pkgfleet's back), and logs it: the listing
// leaves that file out and serves the rest.
func (x *Index) missing(b *registry.Build, file string, err error) bool {
	if !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	x.Log.Error("an artifact a build record names is missing from the store", "build", b.ID, "file", file, "store", x.Store.String(), "error", err)
	return true
}

// maxBuilds bounds how many successful builds of one source a listing
// considers.
const maxBuilds = 100000

// served returns, per package, the newest successful build of each
// version, newest version first.
func (x *Index) served(ctx context.Context, source string) (map[string][]*registry.Build, error) {
	builds, err := x.servable(ctx, source)
	if err != nil {
		return nil, err
	}
	return Served(builds)[source], nil
}

// servable lists, newest first, the successful builds of the source that
// a listing can pick (Registry.Servable): Served, Needed and the binary
// layouts' picks of them are those of all the source's successful builds,
// and reading them costs what the source serves, not every build in
// Redis.
func (x *Index) servable(ctx context.Context, source string) ([]*registry.Build, error) {
	return x.Registry.Servable(ctx, source, maxBuilds)
}

// made reports whether b is a successful build that made a package.
func made(b *registry.Build) bool {
	return b.Status == registry.StatusSucceeded && b.Package != "" && b.Version != "" && len(b.Artifacts) > 0
}

// Served is the one rule of which builds the source listings serve: of
// builds (successful ones, newest first), per source the newest
// maxBuilds, and of those per package the newest build of each version
// that has artifacts, newest version first. It returns source → package
// → builds. Needed adds what the binary layouts serve.
func Served(builds []*registry.Build) map[string]map[string][]*registry.Build {
	return servedOf(builds, maxBuilds)
}

// servedOf is Served considering the newest limit builds of each source.
func servedOf(builds []*registry.Build, limit int) map[string]map[string][]*registry.Build {
	type key struct{ source, pkg, version string }
	newest := map[key]*registry.Build{}
	for _, b := range considered(builds, limit) {
		k := key{b.Source, b.Package, b.Version}
		if cur, ok := newest[k]; !ok || b.ID > cur.ID {
			newest[k] = b
		}
	}
	out := map[string]map[string][]*registry.Build{}
	for k, b := range newest {
		if out[k.source] == nil {
			out[k.source] = map[string][]*registry.Build{}
		}
		out[k.source][k.pkg] = append(out[k.source][k.pkg], b)
	}
	for _, pkgs := range out {
		for _, list := range pkgs {
			sortBuilds(list)
		}
	}
	return out
}

// Needed is every build of builds (successful ones, newest first) that
// the index may serve, for what retention must keep (internal/retention):
// Served's, and per package version the newest build with each binary
// (platform, R x.y, file name), which the binary layouts pick from even
// when a newer build of the version made none for that R, and the newest
// with a source tarball, which PPM's layout falls back to even when a
// newer build of the version made only binaries (binary.go).
func Needed(builds []*registry.Build) map[int64]bool {
	return neededOf(builds, maxBuilds)
}

// neededOf is Needed considering the newest limit builds of each source.
func neededOf(builds []*registry.Build, limit int) map[int64]bool {
	need := map[int64]bool{}
	for _, pkgs := range servedOf(builds, limit) {
		for _, list := range pkgs {
			for _, b := range list {
				need[b.ID] = true
			}
		}
	}
	type key struct{ source, pkg, version, kind, platform, rversion, file string }
	newest := map[key]*registry.Build{}
	for _, b := range considered(builds, limit) {
		for _, a := range b.Artifacts {
			var k key
			switch a.Kind {
			case "binary":
				k = key{b.Source, b.Package, b.Version, a.Kind, a.Platform, a.RVersion, a.File}
			case "source": // any tarball of the version: pick takes the first
				k = key{source: b.Source, pkg: b.Package, version: b.Version, kind: a.Kind}
			default:
				continue
			}
			if cur, ok := newest[k]; !ok || b.ID > cur.ID {
				newest[k] = b
			}
		}
	}
	for _, b := range newest {
		need[b.ID] = true
	}
	return need
}

// considered are the builds of builds a listing looks at: per source the
// newest limit (maxBuilds) successful ones, of those the ones that made a
// package.
func considered(builds []*registry.Build, limit int) []*registry.Build {
	var out []*registry.Build
	seen := map[string]int{}
	for _, b := range builds {
		if b.Status != registry.StatusSucceeded || seen[b.Source] == limit {
			continue
		}
		seen[b.Source]++
		if made(b) {
			out = append(out, b)
		}
	}
	return out
}

// metadata reads (and caches) the package metadata inside an artifact.
func (x *Index) metadata(ctx context.Context, b *registry.Build, a registry.Artifact) (pkgmeta.Fields, error) {
	k := fmt.Sprintf("%d/%s", b.ID, a.File)
	x.mu.Lock()
	f, ok := x.cache[k]
	x.mu.Unlock()
	if ok {
		return f, nil
	}
	fh, err := x.Store.Open(ctx, b.Source, b.Package, b.ID, b.AttemptToken, a.File)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	switch a.Kind {
	case "source", "binary":
		f, err = pkgmeta.ReadTarDESCRIPTION(fh, b.Package)
		if err == nil {
			if _, err = fh.Seek(0, 0); err == nil {
				f["MD5sum"], err = md5File(fh)
			}
		}
	case "wheel":
		f, err = pkgmeta.ReadWheelMetadata(fh, fh.Size())
	default:
		f, err = pkgmeta.ReadSdistPKGInfo(fh)
	}
	if err != nil {
		return nil, fmt.Errorf("%s of build %d: %w", a.File, b.ID, err)
	}
	x.mu.Lock()
	x.cache[k] = f
	x.mu.Unlock()
	return f, nil
}

func sortStrings(s []string, less func(a, b string) bool) {
	sort.Slice(s, func(i, j int) bool { return less(s[i], s[j]) })
}

func sortBuildsBy(s []*registry.Build, less func(a, b *registry.Build) bool) {
	sort.Slice(s, func(i, j int) bool { return less(s[i], s[j]) })
}
