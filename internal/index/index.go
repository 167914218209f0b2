// Package index serves what pkgfleet built the way package managers read
// it: a CRAN-like repository per `git` source (src/contrib/PACKAGES,
// PACKAGES.gz, the tarballs, Archive/) for R's install.packages, and a
// PEP 503 simple index (with the PEP 691 JSON form) per `git-python`
// source for pip.
//
// Which builds are served: for each package version, the newest successful
// build (for commit builders the newest commit wins); older builds stay
// reachable through the API by build id; a failed build never replaces a
// good artifact. The index is computed from the registry on each request,
// with artifact metadata cached by pkgmeta.
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
	"github.com/pkgfleet/pkgfleet/internal/version"
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
	builds, err := x.Registry.Builds(ctx, registry.Filter{Source: source, Status: registry.StatusSucceeded, Limit: maxBuilds})
	if err != nil {
		return nil, err
	}
	return Served(builds)[source], nil
}

// Served is the one rule of which builds the index serves, for the
// listings and for what retention must keep (internal/retention): of
// builds (successful ones, newest first), per source the newest
// maxBuilds, and of those per package the newest build of each version
// that has artifacts, newest version first. It returns source → package
// → builds.
func Served(builds []*registry.Build) map[string]map[string][]*registry.Build {
	type key struct{ source, pkg, version string }
	newest := map[key]*registry.Build{}
	considered := map[string]int{}
	for _, b := range builds {
		if b.Status != registry.StatusSucceeded || considered[b.Source] == maxBuilds {
			continue
		}
		considered[b.Source]++
		if b.Package == "" || b.Version == "" || len(b.Artifacts) == 0 {
			continue
		}
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
			sort.Slice(list, func(i, j int) bool {
				if c := version.Compare(list[i].Version, list[j].Version); c != 0 {
					return c > 0
				}
				return list[i].ID > list[j].ID
			})
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
	case "source":
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
