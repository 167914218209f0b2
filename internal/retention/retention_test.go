package retention

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/buildlog"
	"github.com/pkgfleet/pkgfleet/internal/index"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

var rds *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &rds)) }

type fixture struct {
	t     *testing.T
	rdb   redis.UniversalClient
	reg   *registry.Registry
	store *store.Dir
	logs  *buildlog.Logs
	base  time.Time // when the builds finished
	seq   int
}

func setup(t *testing.T) *fixture {
	t.Helper()
	rdb, _ := rds.DB(t)
	reg := registry.New(rdb)
	st, err := store.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.CreateSource(context.Background(), registry.Source{Name: "src", Type: registry.TypeGit}); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, rdb: rdb, reg: reg, store: st, logs: &buildlog.Logs{Registry: reg, Store: st},
		base: time.Now().UTC().Add(-48 * time.Hour).Truncate(time.Second)}
}

// tarball is an R source package p of version v, as R CMD build makes.
func tarball(t *testing.T, v string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	desc := fmt.Sprintf("Package: p\nVersion: %s\nLicense: MIT\n", v)
	_ = tw.WriteHeader(&tar.Header{Name: "p/DESCRIPTION", Mode: 0o644, Size: int64(len(desc))})
	_, _ = tw.Write([]byte(desc))
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// build records a finished build of builder (status; version and its
// stored tarball when it succeeded), finished at f.base + at, with a log
// moved into the store unless live.
func (f *fixture) build(builder, status, version string, at time.Duration, live bool) int64 {
	f.t.Helper()
	ctx := context.Background()
	f.seq++
	b, _, err := f.reg.CreateBuild(ctx, &registry.Build{Source: "src", Builder: builder, Language: registry.LangR, Ref: "main", SHA: fmt.Sprintf("%040d", f.seq)}, registry.ReuseUnlessFailed)
	if err != nil {
		f.t.Fatal(err)
	}
	token := int64(1000 + f.seq)
	var arts []registry.Artifact
	if status == registry.StatusSucceeded {
		dir := f.t.TempDir()
		file := "p_" + version + ".tar.gz"
		if err := os.WriteFile(filepath.Join(dir, file), tarball(f.t, version), 0o600); err != nil {
			f.t.Fatal(err)
		}
		if arts, err = f.store.Put(ctx, "src", "p", b.ID, token, dir, []registry.Artifact{{File: file, Kind: "source"}}); err != nil {
			f.t.Fatal(err)
		}
	}
	end := f.base.Add(at)
	if _, err := f.reg.UpdateBuild(ctx, b.ID, func(b *registry.Build) error {
		b.Status, b.AttemptToken, b.FinishedAt = status, token, &end
		if status == registry.StatusSucceeded {
			b.Package, b.Version, b.Artifacts = "p", version, arts
		}
		return nil
	}); err != nil {
		f.t.Fatal(err)
	}
	if err := f.reg.AppendLog(ctx, b.ID, []byte(fmt.Sprintf("==> build %d\n", b.ID)), 1<<20, "test"); err != nil {
		f.t.Fatal(err)
	}
	if !live {
		if moved, err := f.logs.Move(ctx, b.ID); err != nil || !moved {
			f.t.Fatalf("move the log of build %d: %v %v", b.ID, moved, err)
		}
	}
	return b.ID
}

// served fetches the CRAN index's PACKAGES and each file it serves.
func (f *fixture) served(paths ...string) map[string]string {
	f.t.Helper()
	x := index.New(f.reg, f.store, testenv.Logger(f.t))
	mux := http.NewServeMux()
	x.Routes(mux, func(h http.Handler) http.Handler { return h })
	out := map[string]string{}
	for _, p := range append([]string{"/cran/src/src/contrib/PACKAGES"}, paths...) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		if rec.Code != 200 {
			f.t.Fatalf("GET %s: %d %s", p, rec.Code, rec.Body)
		}
		out[p] = rec.Body.String()
	}
	return out
}

// TestPassKeepsServedBuildsAndTheLastNAndRemovesTheRest: of one
// builder's finished builds older than KeepFor, the pass keeps the
// newest succeeded build of each version (the index serves them) and the
// last KeepBuilds, a running build, and every build of KeepFor; it drops
// the others with their stored logs and artifacts, and the index serves
// the same files afterwards. A kept build's log still in Redis moves.
func TestPassKeepsServedBuildsAndTheLastNAndRemovesTheRest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	ok, failed := registry.StatusSucceeded, registry.StatusFailed
	var ids []int64
	for i, spec := range []struct{ status, version string }{
		{ok, "1.0"}, {ok, "1.0"}, {failed, ""}, {ok, "1.0"}, // 4: served 1.0
		{ok, "1.1"}, {failed, ""}, {ok, "1.1"}, // 7: served 1.1
		{failed, ""}, {ok, "1.2"}, {registry.StatusCanceled, ""}, {ok, "1.2"}, // the last 3: 9, 10, 11 (11 serves 1.2)
	} {
		ids = append(ids, f.build("b", spec.status, spec.version, time.Duration(i)*time.Minute, i == 9))
	}
	fresh := f.build("c", failed, "", 47*time.Hour, false) // within KeepFor
	running, _, err := f.reg.CreateBuild(ctx, &registry.Build{Source: "src", Builder: "b", Language: registry.LangR, Ref: "main", SHA: fmt.Sprintf("%040d", 999)}, registry.ReuseUnlessFailed)
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{"/cran/src/src/contrib/p_1.2.tar.gz", "/cran/src/src/contrib/Archive/p/p_1.1.tar.gz", "/cran/src/src/contrib/Archive/p/p_1.0.tar.gz"}
	before := f.served(paths...)

	removed := map[string]int{}
	r := &Retainer{Registry: f.reg, Logs: f.logs, Redis: f.rdb, Policy: Policy{KeepBuilds: 3, KeepFor: 24 * time.Hour},
		Log: testenv.Logger(t), Batch: 4, Removed: func(kind string, n int) { removed[kind] += n }}
	now := f.base.Add(48 * time.Hour)
	res, err := r.Pass(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	// The last three of b are the running build, ids[10] and ids[9].
	want := []int64{ids[3], ids[6], ids[9], ids[10], fresh, running.ID}
	var kept []int64
	for _, id := range append(slices.Clone(ids), fresh, running.ID) {
		if _, err := f.reg.Build(ctx, id); err == nil {
			kept = append(kept, id)
		} else if !errors.Is(err, registry.ErrNotFound) {
			t.Fatal(err)
		}
	}
	if !slices.Equal(kept, want) {
		t.Fatalf("kept builds %v, want %v (ids %v)", kept, want, ids)
	}
	if res.Dropped != 7 || removed[KindBuild] != 7 || res.Moved != 1 || removed[KindRedisLog] != 1 {
		t.Fatalf("pass %+v, metric %v: want 7 builds dropped and 1 log moved", res, removed)
	}
	// The dropped builds' files went: 4 tarballs and 7 logs.
	if res.Files != 11 || removed[KindFile] != 11 {
		t.Fatalf("%d files removed (metric %d), want 11", res.Files, removed[KindFile])
	}
	if err := f.store.Walk(ctx, func(s store.Stored) error {
		if !slices.Contains(want, s.Build) {
			t.Errorf("the store still holds %s of a dropped build", s.Name())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if after := f.served(paths...); !maps(before, after) {
		t.Fatalf("the index serves other files after the pass:\nbefore %v\nafter  %v", before, after)
	}
	if b, _ := f.reg.Build(ctx, ids[9]); b.Log == nil {
		t.Fatalf("the kept build's log still in Redis was not moved")
	}
	counts, err := f.reg.CountBuildsByStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[ok] != 3 || counts[failed] != 1 || counts[registry.StatusCanceled] != 1 || counts[registry.StatusQueued] != 1 {
		t.Fatalf("status counts after the pass: %v", counts)
	}
	if res, err := r.Pass(ctx, now); err != nil || res.Dropped+res.Files+res.Moved != 0 {
		t.Fatalf("a second pass removed %+v (%v), want nothing", res, err)
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
