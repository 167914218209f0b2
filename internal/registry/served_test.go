package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// servedFixture writes builds of sources through the registry's own
// write paths and says what Servable must return, computed the way the
// listings did before the served keys: from every build in Redis.
type servedFixture struct {
	t   *testing.T
	r   *Registry
	ctx context.Context
	seq int
}

func newServedFixture(t *testing.T) *servedFixture {
	return &servedFixture{t: t, r: setup(t), ctx: context.Background()}
}

// create makes a queued build of builder bl in source src.
func (f *servedFixture) create(src, bl string) *Build {
	f.t.Helper()
	f.seq++
	b, _, err := f.r.CreateBuild(f.ctx, &Build{Source: src, Builder: bl, Language: LangR, Ref: "main", SHA: fmt.Sprintf("%040x", f.seq)}, ReuseActive)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// finish writes b's last record: status, and when it made one, the
// package version and artifacts; fenced (casBuild) or not (putBuild).
func (f *servedFixture) finish(id int64, fenced bool, status, pkg, ver string, arts ...Artifact) {
	f.t.Helper()
	edit := func(b *Build) error {
		b.Status, b.Package, b.Version, b.Artifacts = status, pkg, ver, arts
		return nil
	}
	if !fenced {
		if _, err := f.r.UpdateBuild(f.ctx, id, edit); err != nil {
			f.t.Fatal(err)
		}
		return
	}
	_, _, a, err := f.r.BeginAttempt(f.ctx, id, 1, "w")
	if err != nil {
		f.t.Fatal(err)
	}
	if a.Token == 0 { // finished already: edit it as a cancel or an operator would
		if _, err := f.r.UpdateBuild(f.ctx, id, edit); err != nil {
			f.t.Fatal(err)
		}
		return
	}
	if _, err := f.r.UpdateBuildAs(f.ctx, a, edit); err != nil {
		f.t.Fatal(err)
	}
}

func (f *servedFixture) drop(ids ...int64) {
	f.t.Helper()
	recs, err := f.r.Records(f.ctx, ids)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.r.DropBuilds(f.ctx, recs); err != nil {
		f.t.Fatal(err)
	}
}

func src(pkg, ver string) Artifact {
	return Artifact{Kind: "source", File: pkg + "_" + ver + ".tar.gz"}
}
func bin(pkg, ver, platform, rv string) Artifact {
	return Artifact{Kind: "binary", File: pkg + "_" + ver + "_R_x86_64-pc-linux-gnu.tar.gz", Platform: platform, RVersion: rv}
}

// want is what Servable(source, newest) must return, by the rule it
// keeps: of the newest `newest` successful builds of the source (read by
// the full scan of every build), per package version the newest that
// made a package, the newest with a source tarball and the newest with
// each binary; ids, newest first.
func (f *servedFixture) want(source string, newest int) []int64 {
	f.t.Helper()
	all, err := f.r.scanBuilds(f.ctx, Filter{Source: source, Status: StatusSucceeded, Limit: 1 << 30})
	if err != nil {
		f.t.Fatal(err)
	}
	if len(all) > newest {
		all = all[:newest]
	}
	top := map[string]int64{}
	for _, b := range all {
		if b.Package == "" || b.Version == "" || len(b.Artifacts) == 0 {
			continue
		}
		slots := []string{"v"}
		for _, a := range b.Artifacts {
			switch a.Kind {
			case "source":
				slots = append(slots, "s")
			case "binary":
				slots = append(slots, "b\x00"+a.Platform+"\x00"+a.RVersion+"\x00"+a.File)
			}
		}
		for _, s := range slots {
			k := b.Package + "\x00" + b.Version + "\x00" + s
			top[k] = max(top[k], b.ID)
		}
	}
	var ids []int64
	for _, id := range top {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	return ids
}

func (f *servedFixture) got(r *Registry, source string, newest int) []int64 {
	f.t.Helper()
	builds, err := r.Servable(f.ctx, source, newest)
	if err != nil {
		f.t.Fatal(err)
	}
	ids := []int64{}
	for _, b := range builds {
		ids = append(ids, b.ID)
	}
	return ids
}

func (f *servedFixture) check(step, source string, newest int, explicit ...int64) {
	f.t.Helper()
	got, want := f.got(f.r, source, newest), f.want(source, newest)
	if want == nil {
		want = []int64{}
	}
	if !slices.Equal(got, want) {
		f.t.Fatalf("%s: Servable(%s, %d) = %v, the full scan gives %v", step, source, newest, got, want)
	}
	if explicit != nil && !slices.Equal(got, explicit) {
		f.t.Fatalf("%s: Servable(%s, %d) = %v, want %v", step, source, newest, got, explicit)
	}
}

// countBuilds makes the build counts exist, as the API's first look at
// them does once there are builds: the served keys are checked against
// them.
func (f *servedFixture) countBuilds() {
	f.t.Helper()
	if _, err := f.r.CountBuildsByStatus(f.ctx); err != nil {
		f.t.Fatal(err)
	}
}

// wipeServed makes the store one written before the served keys existed.
func (f *servedFixture) wipeServed() {
	f.t.Helper()
	keys, err := f.r.rdb.Keys(f.ctx, keyServedPrefix+"*").Result()
	if err != nil {
		f.t.Fatal(err)
	}
	if len(keys) > 0 {
		if err := f.r.rdb.Del(f.ctx, keys...).Err(); err != nil {
			f.t.Fatal(err)
		}
	}
}

// A source's servable builds follow builds that succeed (in any order of
// their ids), fail, are rerun, are edited after they finished and are
// dropped: a slot whose top goes gets the newest of the rest.
func TestServableFollowsSucceededFailedRetriedEditedAndDroppedBuilds(t *testing.T) {
	t.Parallel()
	f := newServedFixture(t)
	b1, b2, b3 := f.create("s", "a"), f.create("s", "a"), f.create("s", "a")
	other := f.create("t", "a")
	f.check("nothing finished", "s", 100, []int64{}...)

	// b3 finishes first, b1 after it: the version's top stays b3.
	f.finish(b3.ID, true, StatusSucceeded, "p", "1.0", src("p", "1.0"))
	f.finish(b1.ID, false, StatusSucceeded, "p", "1.0", src("p", "1.0"))
	f.finish(b2.ID, true, StatusFailed, "", "")
	f.finish(other.ID, true, StatusSucceeded, "p", "9.0", src("p", "9.0"))
	f.check("b3 then b1 of 1.0, b2 failed", "s", 100, b3.ID)
	f.check("the other source", "t", 100, other.ID)

	// A binary in an older build of the version stays servable beside the
	// version's newest build, which has none for that R.
	b4 := f.create("s", "a")
	f.finish(b4.ID, true, StatusSucceeded, "p", "1.0", src("p", "1.0"), bin("p", "1.0", "debian-12", "4.2"))
	b5 := f.create("s", "a")
	f.finish(b5.ID, true, StatusSucceeded, "p", "1.0", src("p", "1.0"), bin("p", "1.0", "debian-12", "4.4"))
	f.check("binaries for two Rs", "s", 100, b5.ID, b4.ID)

	// Rerun of b5's commit: a new build replaces it when it succeeds.
	rerun := f.create("s", "a")
	f.check("rerun queued", "s", 100, b5.ID, b4.ID)
	f.finish(rerun.ID, true, StatusRunning, "", "")
	f.finish(rerun.ID, true, StatusSucceeded, "p", "1.0", src("p", "1.0"), bin("p", "1.0", "debian-12", "4.4"))
	f.check("rerun succeeded", "s", 100, rerun.ID, b4.ID)

	// Dropping a top hands its slots to the newest of the rest.
	f.drop(rerun.ID)
	f.check("rerun dropped", "s", 100, b5.ID, b4.ID)
	f.drop(b4.ID, b5.ID)
	f.check("both binaries dropped", "s", 100, b3.ID)

	// A successful build edited to failed leaves; edited back, returns.
	f.finish(b3.ID, false, StatusFailed, "p", "1.0", src("p", "1.0"))
	f.check("b3 edited to failed", "s", 100, b1.ID)
	f.finish(b1.ID, false, StatusSucceeded, "p", "2.0", src("p", "2.0"))
	f.check("b1 edited to another version", "s", 100, b1.ID)
	f.finish(b3.ID, false, StatusSucceeded, "p", "1.0", src("p", "1.0"))
	f.check("b3 succeeded again", "s", 100, b3.ID, b1.ID)
	f.finish(b3.ID, false, StatusSucceeded, "", "")
	f.check("b3 made nothing", "s", 100, b1.ID)

	// Deleting the builder and the source keeps their builds, as the
	// builds listing does.
	if _, err := f.r.CreateSource(f.ctx, Source{Name: "u", Type: TypeGit}); err != nil {
		t.Fatal(err)
	}
	if err := f.r.CreateBuilder(f.ctx, &Builder{Source: "u", Name: "a", URL: "https://h/x"}); err != nil {
		t.Fatal(err)
	}
	u := f.create("u", "a")
	f.finish(u.ID, true, StatusSucceeded, "q", "1.0", src("q", "1.0"))
	if err := f.r.DeleteBuilder(f.ctx, "u", "a"); err != nil {
		t.Fatal(err)
	}
	if err := f.r.DeleteSource(f.ctx, "u"); err != nil {
		t.Fatal(err)
	}
	f.check("builder and source deleted", "u", 100, u.ID)
}

// Only the newest `newest` successful builds of a source count, made a
// package or not, as the listings' bound (index.maxBuilds) says: a
// version whose builds are all older is not listed.
func TestServableConsidersOnlyTheNewestSuccessfulBuilds(t *testing.T) {
	t.Parallel()
	f := newServedFixture(t)
	old := f.create("s", "a")
	f.finish(old.ID, true, StatusSucceeded, "p", "1.0", src("p", "1.0"))
	mid := f.create("s", "a")
	f.finish(mid.ID, true, StatusSucceeded, "p", "2.0", src("p", "2.0"))
	nothing := f.create("s", "a")
	f.finish(nothing.ID, true, StatusSucceeded, "", "")
	failed := f.create("s", "a")
	f.finish(failed.ID, true, StatusFailed, "", "")
	f.check("all", "s", 3, mid.ID, old.ID)
	f.check("newest 2", "s", 2, mid.ID)
	f.check("newest 1", "s", 1, []int64{}...)
}

// Random builds across sources, finished out of order through both write
// paths, edited, rerun and dropped: after every few steps Servable is what
// the full scan of every build gives, with and without the bound.
func TestServableEqualsTheFullScanUnderRandomWrites(t *testing.T) {
	t.Parallel()
	f := newServedFixture(t)
	rng := rand.New(rand.NewPCG(27, 7))
	sources := []string{"s", "t"}
	open := []int64{f.create("s", "a").ID}
	var done []int64
	f.countBuilds()
	f.r.OnServedRebuild = func() { t.Error("the served keys were found behind builds only this version wrote") }
	for step := range 600 {
		switch n := rng.IntN(10); {
		case n < 4 || len(open) == 0:
			open = append(open, f.create(sources[rng.IntN(2)], "a").ID)
		case n < 8:
			i := rng.IntN(len(open)) // finish any open build: out of order
			id := open[i]
			open = slices.Delete(open, i, i+1)
			f.finishRandom(rng, id)
			done = append(done, id)
		case n < 9 && len(done) > 0:
			f.finishRandom(rng, done[rng.IntN(len(done))]) // edited after it finished
		case len(done) > 0:
			i := rng.IntN(len(done))
			f.drop(done[i])
			done = slices.Delete(done, i, i+1)
		}
		if step%25 == 24 {
			for _, s := range sources {
				for _, newest := range []int{1 << 20, 20, 3} {
					f.check(fmt.Sprintf("step %d", step), s, newest)
				}
			}
		}
	}
	if got := f.got(f.r, "s", 1<<20); len(got) < 5 {
		t.Fatalf("the random writes served only %v: the comparison tested little", got)
	}
}

// finishRandom gives build id a random last record: one of two packages,
// three versions, a source tarball or not, binaries for two Rs on two
// platforms, or a failure.
func (f *servedFixture) finishRandom(rng *rand.Rand, id int64) {
	f.t.Helper()
	if rng.IntN(4) == 0 {
		f.finish(id, rng.IntN(2) == 0, StatusFailed, "", "")
		return
	}
	pkg := []string{"p", "q"}[rng.IntN(2)]
	ver := []string{"1.0", "1.1", "2.0"}[rng.IntN(3)]
	var arts []Artifact
	if rng.IntN(5) != 0 {
		arts = append(arts, src(pkg, ver))
	}
	for _, platform := range []string{"debian-12", "ubuntu-24.04"} {
		for _, rv := range []string{"4.2", "4.4"} {
			if rng.IntN(3) == 0 {
				arts = append(arts, bin(pkg, ver, platform, rv))
			}
		}
	}
	f.finish(id, rng.IntN(2) == 0, StatusSucceeded, pkg, ver, arts...)
}

// A store written before the served keys existed is filled by the first
// listing, in batches, while builds keep finishing and being dropped
// between the batches.
func TestServableFillsAStoreWrittenBeforeItsKeys(t *testing.T) {
	t.Parallel()
	f := newServedFixture(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var ids []int64
	for range 3*fillBatch + 17 {
		b := f.create("s", "a")
		f.finishRandom(rng, b.ID)
		ids = append(ids, b.ID)
	}
	f.wipeServed()

	// Fill half, then write: a top of a filled version dropped, a filled
	// build failed, an unfilled one edited, a new one succeeded.
	gen, err := wipeServed.Run(f.ctx, f.r.rdb, wipeKeys, "first", 0).Int64()
	if err != nil || gen == 0 {
		t.Fatalf("first generation: %d %v", gen, err)
	}
	next, err := fillServed.Run(f.ctx, f.r.rdb, []string{keyServedGen, keyBuilds, keyServedFilled}, gen, 0, fillBatch).Int64()
	if err != nil || next != ids[fillBatch-1] {
		t.Fatalf("first batch: %d %v, want it to end at build %d", next, err, ids[fillBatch-1])
	}
	if got, _ := f.r.rdb.Exists(f.ctx, keyServedFilled).Result(); got != 0 {
		t.Fatal("marked filled after one batch")
	}
	f.drop(ids[fillBatch-1], ids[10])
	f.finish(ids[20], false, StatusFailed, "", "")
	f.finish(ids[2*fillBatch], false, StatusSucceeded, "p", "1.0", src("p", "1.0"))
	late := f.create("s", "a")
	f.finish(late.ID, true, StatusSucceeded, "q", "2.0", src("q", "2.0"))

	f.check("filled by the first listing", "s", 1<<20)
	if got, _ := f.r.rdb.Exists(f.ctx, keyServedFilled).Result(); got != 1 {
		t.Fatal("not marked filled after the listing")
	}
	f.check("filled, newest 40", "s", 40)
}

// Two API replicas listing at once on a store without the served keys
// both fill it, each once however many of its listings ask; neither
// corrupts the other's work, also while builds finish meanwhile.
func TestTwoReplicasFillingAtOnceAgree(t *testing.T) {
	t.Parallel()
	f := newServedFixture(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2*fillBatch + 100 {
		b := f.create("s", "a")
		f.finishRandom(rng, b.ID)
	}
	f.wipeServed()
	// Each replica its own client, which counts the walks it begins.
	var replicas []*Registry
	var walks []*atomic.Int64
	for range 2 {
		c := redis.NewClient(f.r.rdb.(*redis.Client).Options())
		t.Cleanup(func() { c.Close() })
		n := &atomic.Int64{}
		c.AddHook(walkCounter{n})
		replicas, walks = append(replicas, New(c)), append(walks, n)
	}
	var extra []*Build
	for range 20 {
		extra = append(extra, f.create("s", "a"))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 7)
	start := make(chan struct{})
	for _, r := range replicas {
		for range 3 { // listings of one replica wait for its one fill
			wg.Go(func() {
				<-start
				if _, err := r.Servable(f.ctx, "s", 1<<20); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Go(func() {
		<-start
		for i, b := range extra {
			edit := func(x *Build) error {
				x.Status, x.Package, x.Version = StatusSucceeded, "p", "1.0"
				x.Artifacts = []Artifact{src("p", "1.0"), bin("p", "1.0", "debian-12", fmt.Sprint("4.", i%3))}
				return nil
			}
			if _, err := f.r.UpdateBuild(f.ctx, b.ID, edit); err != nil {
				errs <- err
				return
			}
		}
	})
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := f.want("s", 1<<20)
	for i, r := range replicas {
		if got := f.got(r, "s", 1<<20); !slices.Equal(got, want) {
			t.Fatalf("replica %d lists %v, the full scan gives %v", i, got, want)
		}
		if n := walks[i].Load(); n > 1 {
			t.Errorf("replica %d began %d walks of every build for its 3 listings, want at most 1", i, n)
		}
	}
	if walks[0].Load()+walks[1].Load() == 0 {
		t.Fatal("no replica walked the builds")
	}
}

// walkCounter counts the fill walks a client begins: fillServed scripts
// from the first build on (EVALSHA's, once per walk even when the
// script is then loaded).
type walkCounter struct{ n *atomic.Int64 }

func (w walkCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (w walkCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a := cmd.Args()
		if cmd.Name() == "evalsha" && len(a) == 9 && a[1] == fillServed.Hash() && fmt.Sprint(a[7]) == "0" {
			w.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (w walkCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// oldWrite writes a build's record as a version of pkgfleet without the
// served keys did: the record and its status count, nothing else (raw
// "": dropped, as its retention did).
func (f *servedFixture) oldWrite(id int64, edit func(*Build)) {
	f.t.Helper()
	b, err := f.r.Build(f.ctx, id)
	if err != nil {
		f.t.Fatal(err)
	}
	from := b.Status
	pipe := f.r.rdb.TxPipeline()
	pipe.HIncrBy(f.ctx, keyBuildCounts, from, -1)
	if edit == nil {
		pipe.Del(f.ctx, keyBuild(id))
		pipe.ZRem(f.ctx, keyBuilds, id)
	} else {
		edit(b)
		data, _ := json.Marshal(b)
		pipe.Set(f.ctx, keyBuild(id), data, 0)
		pipe.HIncrBy(f.ctx, keyBuildCounts, b.Status, 1)
	}
	if _, err := pipe.Exec(f.ctx); err != nil {
		f.t.Fatal(err)
	}
}

// A worker or API replica of a version without the served keys (a rolling
// upgrade, a rollback) writes builds they miss: the next listing finds
// them behind the build counts and rebuilds them, and while that version
// keeps writing within the pause between rebuilds, listings read every
// build instead. Either way they list what the full scan does.
func TestServableRebuildsAfterAVersionWithoutItWrote(t *testing.T) {
	t.Parallel()
	f := newServedFixture(t)
	rebuilds := 0
	f.r.OnServedRebuild = func() { rebuilds++ }
	old := f.create("s", "a")
	f.countBuilds()
	f.finish(old.ID, true, StatusSucceeded, "p", "1.0", src("p", "1.0"))
	top := f.create("s", "a")
	f.finish(top.ID, true, StatusSucceeded, "p", "1.0", src("p", "1.0"))
	queued := f.create("s", "a")
	f.check("filled", "s", 100, top.ID)
	if rebuilds != 0 {
		t.Fatalf("%d rebuilds of keys this version kept", rebuilds)
	}

	// The old version finishes a build (a new version) and drops 1.0's top.
	f.oldWrite(queued.ID, func(b *Build) {
		b.Status, b.Package, b.Version, b.Artifacts = StatusSucceeded, "p", "2.0", []Artifact{src("p", "2.0")}
	})
	f.oldWrite(top.ID, nil)
	f.check("after the old version wrote", "s", 100, queued.ID, old.ID)
	if rebuilds != 1 {
		t.Fatalf("%d rebuilds, want 1", rebuilds)
	}
	f.check("rebuilt", "s", 100, queued.ID, old.ID)

	// It writes again within the pause: every build is read instead.
	another := f.create("s", "a")
	f.oldWrite(another.ID, func(b *Build) {
		b.Status, b.Package, b.Version, b.Artifacts = StatusSucceeded, "q", "1.0", []Artifact{src("q", "1.0")}
	})
	f.check("behind within the pause", "s", 100, another.ID, queued.ID, old.ID)
	if rebuilds != 1 {
		t.Fatalf("%d rebuilds within the pause, want 1", rebuilds)
	}

	// The pause over (its key gone), the next listing rebuilds.
	if err := f.r.rdb.Del(f.ctx, keyServedRebuilt).Err(); err != nil {
		t.Fatal(err)
	}
	f.check("after the pause", "s", 100, another.ID, queued.ID, old.ID)
	if rebuilds != 2 {
		t.Fatalf("%d rebuilds after the pause, want 2", rebuilds)
	}
	copied, counts := f.r.rdb.HGetAll(f.ctx, keyServedCounts).Val(), f.r.rdb.HGetAll(f.ctx, keyBuildCounts).Val()
	if fmt.Sprint(copied) != fmt.Sprint(counts) || len(counts) == 0 {
		t.Fatalf("the served keys' copy of the build counts %v, the counts %v", copied, counts)
	}
	f.check("rebuilt again, nothing behind", "s", 100, another.ID, queued.ID, old.ID)
	if rebuilds != 2 {
		t.Fatalf("%d rebuilds with nothing behind, want 2", rebuilds)
	}
}

// A top's record deleted behind the scripts' back (by hand, not by
// retention) is found at the next listing, which rebuilds.
func TestServableRebuildsWhenATopsRecordIsGone(t *testing.T) {
	t.Parallel()
	f := newServedFixture(t)
	rebuilds := 0
	f.r.OnServedRebuild = func() { rebuilds++ }
	old := f.create("s", "a")
	f.finish(old.ID, true, StatusSucceeded, "p", "1.0", src("p", "1.0"))
	top := f.create("s", "a")
	f.finish(top.ID, true, StatusSucceeded, "p", "1.0", src("p", "1.0"))
	f.check("filled", "s", 100, top.ID)
	if err := f.r.rdb.Del(f.ctx, keyBuild(top.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	f.check("its top deleted by hand", "s", 100, old.ID)
	if rebuilds != 1 {
		t.Fatalf("%d rebuilds, want 1", rebuilds)
	}
}

// checkListing compares the builds listing of each source (Builds with a
// Source and no Builder, from its served "all") with the full scan of
// every build, for a few limits and statuses.
func (f *servedFixture) checkListing(step string, sources ...string) {
	f.t.Helper()
	ids := func(bs []*Build) []int64 {
		out := []int64{}
		for _, b := range bs {
			out = append(out, b.ID)
		}
		return out
	}
	for _, s := range sources {
		for _, flt := range []Filter{{Source: s, Limit: 1 << 20}, {Source: s, Limit: 7}, {Source: s, Status: StatusFailed, Limit: 1 << 20}} {
			got, err := f.r.Builds(f.ctx, flt)
			if err != nil {
				f.t.Fatal(err)
			}
			want, err := f.r.scanBuilds(f.ctx, flt)
			if err != nil {
				f.t.Fatal(err)
			}
			if !slices.Equal(ids(got), ids(want)) {
				f.t.Fatalf("%s: Builds(%+v) = %v, the full scan gives %v", step, flt, ids(got), ids(want))
			}
		}
	}
}

// A source's builds listing reads its served "all", not every build, and
// lists what the full scan does: under creates in several sources and
// builders (one of them deleted, its builds kept as history), finishes
// and drops; on a store written before the key (filled by the first
// listing); and after a version without it wrote (rebuilt).
func TestASourcesBuildsListingEqualsTheFullScan(t *testing.T) {
	t.Parallel()
	f := newServedFixture(t)
	rng := rand.New(rand.NewPCG(9, 9))
	sources, builders := []string{"s", "t", "u"}, []string{"a", "b"}
	var all []int64
	f.countBuilds()
	f.r.OnServedRebuild = func() { t.Error("the served keys were found behind builds only this version wrote") }
	for step := range 300 {
		switch n := rng.IntN(10); {
		case n < 6 || len(all) == 0:
			all = append(all, f.create(sources[rng.IntN(2)], builders[rng.IntN(2)]).ID)
		case n < 9:
			f.finishRandom(rng, all[rng.IntN(len(all))])
		default:
			i := rng.IntN(len(all))
			f.drop(all[i])
			all = slices.Delete(all, i, i+1)
		}
		if step%50 == 49 {
			f.checkListing(fmt.Sprintf("step %d", step), sources...)
		}
	}
	if err := f.r.DeleteBuilder(f.ctx, "s", "b"); err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	f.checkListing("a builder deleted", sources...)
	if n, _ := f.r.rdb.ZCard(f.ctx, keyServed("s", "all")).Result(); n < 50 {
		t.Fatalf("source s lists %d builds in its served keys: the comparison tested little", n)
	}
	// Listing a source with no builds reads no record at all.
	c := redis.NewClient(f.r.rdb.(*redis.Client).Options())
	t.Cleanup(func() { c.Close() })
	var reads atomic.Int64
	c.AddHook(commandCounter{"mget", &reads})
	if got, err := New(c).Builds(f.ctx, Filter{Source: "u"}); err != nil || len(got) != 0 || reads.Load() != 0 {
		t.Fatalf("listing a source without builds: %d builds, %v, %d MGETs of records; want none", len(got), err, reads.Load())
	}
	listed := func() int64 { n, _ := f.r.rdb.Exists(f.ctx, keyServed("s", "all")).Result(); return n }

	// A store written before the key: the first listing fills it.
	f.wipeServed()
	f.r.OnServedRebuild = nil
	f.checkListing("filled by the first listing", sources...)
	if listed() != 1 {
		t.Fatal("the first listing did not fill the source's served builds")
	}

	// A version without the key creates a build and drops one: the next
	// listing rebuilds, and lists them as the full scan does.
	rebuilds := 0
	f.r.OnServedRebuild = func() { rebuilds++ }
	old := f.create("s", "a")
	f.r.rdb.ZRem(f.ctx, keyServed("s", "all"), old.ID) // as that version's createBuild: not listed
	f.r.rdb.HIncrBy(f.ctx, keyServedCounts, StatusQueued, -1)
	f.oldWrite(all[0], nil)
	f.checkListing("after a version without the key wrote", sources...)
	if rebuilds != 1 {
		t.Fatalf("%d rebuilds, want 1", rebuilds)
	}
	if got, _ := f.r.rdb.ZScore(f.ctx, keyServed("s", "all"), fmt.Sprint(old.ID)).Result(); got != float64(old.ID) {
		t.Fatalf("the rebuild did not list build %d", old.ID)
	}
}

// commandCounter counts the commands named name a client sends.
type commandCounter struct {
	name string
	n    *atomic.Int64
}

func (c commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == c.name {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// An API prepares the listings as it starts: a store written before the
// served keys is filled then, once, and a listing then finds them ready.
func TestPrepareListingsFillsAStoreWrittenBeforeTheKeysOnce(t *testing.T) {
	t.Parallel()
	f := newServedFixture(t)
	for range 30 {
		f.finish(f.create("s", "a").ID, false, StatusSucceeded, "p", "1.0", src("p", "1.0"))
	}
	f.wipeServed()
	if prepared, err := f.r.PrepareListings(f.ctx); err != nil || !prepared {
		t.Fatalf("PrepareListings on a store without the served keys: %v, %v; want it filled", prepared, err)
	}
	if n, _ := f.r.rdb.ZCard(f.ctx, keyServed("s", "all")).Result(); n != 30 {
		t.Fatalf("the source's list holds %d builds after the fill, want 30", n)
	}
	if prepared, err := f.r.PrepareListings(f.ctx); err != nil || prepared {
		t.Fatalf("PrepareListings again: %v, %v; want nothing to do", prepared, err)
	}
	f.checkListing("after PrepareListings", "s")
}
