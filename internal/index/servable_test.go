package index

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

// setup returns an index on a Redis database of the test's own.
func setup(t testing.TB) (*Index, redis.UniversalClient) {
	t.Helper()
	rdb, _ := redisServer.DB(t)
	return New(registry.New(rdb), nil, slog.New(slog.DiscardHandler)), rdb
}

// randomFleet writes builds of sources through the registry's write
// paths: created in id order, finished in random order (fenced or not),
// some failed, some edited after they finished, some dropped, some
// making nothing; R packages with source tarballs and binaries for two
// platforms and R x.y, Python ones with sdists and wheels. It returns
// the sources.
func randomFleet(t testing.TB, reg *registry.Registry, rng *rand.Rand, steps int) []string {
	t.Helper()
	ctx := context.Background()
	sources := []string{"r1", "r2", "py"}
	pkgs := []string{"alpha", "beta", "gamma", "delta"}
	versions := []string{"0.9", "1.0", "1.0.1", "1.2", "1.10", "2.0-1", "2.0-10"}
	seq := 0
	var open, done []int64
	last := func(id int64, fenced bool) {
		t.Helper()
		b, err := reg.Build(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		edit := func(b *registry.Build) error {
			b.Package, b.Version, b.Artifacts = "", "", nil
			if rng.IntN(5) == 0 {
				b.Status = registry.StatusFailed
				return nil
			}
			b.Status = registry.StatusSucceeded
			if rng.IntN(15) == 0 {
				return nil // succeeded, made nothing
			}
			b.Package, b.Version = pkgs[rng.IntN(len(pkgs))], versions[rng.IntN(len(versions))]
			if b.Source == "py" {
				b.Artifacts = append(b.Artifacts, registry.Artifact{Kind: "sdist", File: b.Package + "-" + b.Version + ".tar.gz"})
				if rng.IntN(2) == 0 {
					b.Artifacts = append(b.Artifacts, registry.Artifact{Kind: "wheel", File: b.Package + "-" + b.Version + "-py3-none-any.whl", Tags: []string{"py3-none-any"}})
				}
				return nil
			}
			if rng.IntN(3) != 0 { // a binary without its source tarball is rare, but possible
				b.Artifacts = append(b.Artifacts, registry.Artifact{Kind: "source", File: b.Package + "_" + b.Version + ".tar.gz"})
			}
			for _, platform := range []string{"debian-12", "ubuntu-24.04"} {
				for _, rv := range []string{"4.2", "4.4"} {
					if rng.IntN(3) == 0 {
						arch := []string{"x86_64-pc-linux-gnu", "aarch64-unknown-linux-gnu"}[rng.IntN(2)]
						b.Artifacts = append(b.Artifacts, registry.Artifact{Kind: "binary", Platform: platform, RVersion: rv,
							File: b.Package + "_" + b.Version + "_R_" + arch + ".tar.gz"})
					}
				}
			}
			return nil
		}
		if fenced && !registry.Terminal(b.Status) {
			_, _, a, err := reg.BeginAttempt(ctx, id, 1, "w")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := reg.UpdateBuildAs(ctx, a, edit); err != nil {
				t.Fatal(err)
			}
			return
		}
		if _, err := reg.UpdateBuild(ctx, id, edit); err != nil {
			t.Fatal(err)
		}
	}
	for range steps {
		switch n := rng.IntN(20); {
		case n < 9 || len(open) == 0:
			seq++
			b, _, err := reg.CreateBuild(ctx, &registry.Build{Source: sources[rng.IntN(len(sources))], Builder: fmt.Sprint("b", rng.IntN(3)),
				Ref: "main", SHA: fmt.Sprintf("%040x", seq)}, registry.ReuseActive)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, b.ID)
			if len(open) == 1 && len(done) == 0 {
				// The counts exist from the first build on, as the API's
				// first look makes them: the served keys are checked
				// against them.
				if _, err := reg.CountBuildsByStatus(ctx); err != nil {
					t.Fatal(err)
				}
			}
		case n < 17:
			i := rng.IntN(len(open))
			last(open[i], rng.IntN(2) == 0)
			done = append(done, open[i])
			open = slices.Delete(open, i, i+1)
		case n < 18 && len(done) > 0:
			last(done[rng.IntN(len(done))], false)
		case len(done) > 0:
			i := rng.IntN(len(done))
			recs, err := reg.Records(ctx, done[i:i+1])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := reg.DropBuilds(ctx, recs); err != nil {
				t.Fatal(err)
			}
			done = slices.Delete(done, i, i+1)
		}
	}
	return sources
}

// everySucceeded is what the listings read before the served keys: every
// build in Redis, filtered to the source's successful ones. (Not
// Builds with the source: that reads the source's served keys too.)
func everySucceeded(t testing.TB, reg *registry.Registry, source string) []*registry.Build {
	t.Helper()
	all, err := reg.Builds(context.Background(), registry.Filter{Status: registry.StatusSucceeded, Limit: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	var out []*registry.Build
	for _, b := range all {
		if b.Source == source && len(out) < maxBuilds {
			out = append(out, b)
		}
	}
	return out
}

func ids(m map[int64]bool) []int64 { return slices.Sorted(maps.Keys(m)) }

func servedIDs(served map[string][]*registry.Build) map[string][]int64 {
	out := map[string][]int64{}
	for pkg, list := range served {
		for _, b := range list {
			out[pkg] = append(out[pkg], b.ID)
		}
	}
	return out
}

func pickedIDs(picked map[string]cranEntry) map[string]string {
	out := map[string]string{}
	for pkg, e := range picked {
		out[pkg] = fmt.Sprintf("%d %s", e.b.ID, e.a.File)
	}
	return out
}

// The listings read the source's servable builds (Registry.Servable)
// instead of every build in Redis, and list exactly what the rule applied
// to every build gives: the source listing and the simple index
// (Served), what retention keeps (Needed), and the binary layouts' picks
// for every platform, R x.y and architecture, with and without the
// fallback; with the bound on the newest builds too.
func TestListingsOfServableBuildsEqualTheFullScan(t *testing.T) {
	t.Parallel()
	x, _ := setup(t)
	x.Registry.OnServedRebuild = func() { t.Error("the served keys were found behind builds only this version wrote") }
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(27, 77))
	sources := randomFleet(t, x.Registry, rng, 1500)
	var wants []want
	for _, platform := range []string{"debian-12", "ubuntu-24.04", "fedora-41"} {
		for _, rv := range []string{"", "4.2", "4.4", "4.5"} {
			for _, arch := range []string{"", "x86_64-pc-linux-gnu", "aarch64-unknown-linux-gnu"} {
				wants = append(wants, want{platform, rv, arch})
			}
		}
	}
	compared := 0
	for _, src := range sources {
		all := everySucceeded(t, x.Registry, src)
		servable, err := x.servable(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		if len(servable) >= len(all) || len(servable) < 10 {
			t.Fatalf("%s: %d servable of %d successful builds: the random fleet tests too little", src, len(servable), len(all))
		}
		got, exp := servedIDs(Served(servable)[src]), servedIDs(Served(all)[src])
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Errorf("%s: served\n%v\nthe full scan serves\n%v", src, got, exp)
		}
		needed := Needed(all)
		if got, exp := ids(Needed(servable)), ids(needed); !slices.Equal(got, exp) {
			t.Errorf("%s: needed %v, the full scan needs %v", src, got, exp)
		}
		for _, list := range Served(all)[src] {
			for _, b := range list {
				if !needed[b.ID] {
					t.Errorf("%s: build %d is served but retention may drop it", src, b.ID)
				}
			}
		}
		for _, w := range wants {
			for _, fallback := range []bool{true, false} {
				// A successful build that made nothing is no package to
				// pick: the binary layouts consider what Served does.
				picked := pick(considered(all, maxBuilds), w, fallback)
				got, exp := pickedIDs(pick(servable, w, fallback)), pickedIDs(picked)
				if fmt.Sprint(got) != fmt.Sprint(exp) {
					t.Errorf("%s %+v fallback %v: picked\n%v\nthe full scan picks\n%v", src, w, fallback, got, exp)
				}
				for pkg, e := range picked {
					if !needed[e.b.ID] {
						t.Errorf("%s %+v fallback %v: %s is served from build %d, which retention may drop", src, w, fallback, pkg, e.b.ID)
					}
				}
				compared += len(exp)
			}
		}
		// The bound: only the newest few successful builds count.
		for _, limit := range []int{1, 5, 40} {
			bounded, err := x.Registry.Servable(ctx, src, limit)
			if err != nil {
				t.Fatal(err)
			}
			got, exp := servedIDs(servedOf(bounded, limit)[src]), servedIDs(servedOf(all, limit)[src])
			if fmt.Sprint(got) != fmt.Sprint(exp) {
				t.Errorf("%s newest %d: served %v, the full scan serves %v", src, limit, got, exp)
			}
			if got, exp := ids(neededOf(bounded, limit)), ids(neededOf(all, limit)); !slices.Equal(got, exp) {
				t.Errorf("%s newest %d: needed %v, the full scan needs %v", src, limit, got, exp)
			}
		}
	}
	if compared < 100 {
		t.Fatalf("only %d picks compared", compared)
	}
}

// PPM's layout falls back to the newest source tarball of the newest
// version, which need not be in the version's newest build: one that
// made only a binary for another R leaves an older build's tarball to
// serve, which the listing reads and retention keeps.
func TestTheFallbackTarballOfAnOlderBuildIsServable(t *testing.T) {
	t.Parallel()
	x, _ := setup(t)
	ctx := context.Background()
	finish := func(sha string, arts ...registry.Artifact) int64 {
		t.Helper()
		b, _, err := x.Registry.CreateBuild(ctx, &registry.Build{Source: "r", Builder: "a", Ref: "main", SHA: sha}, registry.ReuseActive)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := x.Registry.UpdateBuild(ctx, b.ID, func(b *registry.Build) error {
			b.Status, b.Package, b.Version, b.Artifacts = registry.StatusSucceeded, "p", "1.0", arts
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return b.ID
	}
	withSource := finish("a", registry.Artifact{Kind: "source", File: "p_1.0.tar.gz"})
	finish("b", registry.Artifact{Kind: "binary", Platform: "debian-12", RVersion: "4.2", File: "p_1.0_R_x86_64-pc-linux-gnu.tar.gz"})
	servable, err := x.servable(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	e, ok := pick(servable, want{"debian-12", "4.4", ""}, true)["p"]
	if !ok || e.b.ID != withSource || e.a.File != "p_1.0.tar.gz" {
		t.Fatalf("R 4.4 is served %+v, want build %d's p_1.0.tar.gz", e, withSource)
	}
	all := everySucceeded(t, x.Registry, "r")
	if picked := pickedIDs(pick(all, want{"debian-12", "4.4", ""}, true)); fmt.Sprint(picked) != fmt.Sprint(pickedIDs(map[string]cranEntry{"p": e})) {
		t.Fatalf("the full scan picks %v", picked)
	}
	if !Needed(all)[withSource] {
		t.Fatalf("retention may drop build %d, whose tarball R 4.4 is served", withSource)
	}
}
