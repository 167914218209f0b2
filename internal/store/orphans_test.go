package store

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/leader"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestSweepRemovesOnlyWhatNoRecordNames, on both stores: after the
// grace period, files of an unknown build, of an attempt the record does
// not name, or that the record does not list go; the files a record
// names, and those of an attempt still under way, stay.
func TestSweepRemovesOnlyWhatNoRecordNames(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(t *testing.T) Artifacts{
		"dir": func(t *testing.T) Artifacts { s, _ := NewDir(t.TempDir()); return s },
		"s3":  func(t *testing.T) Artifacts { return bucketOn(t, testenv.S3(t), "x/") },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := open(t)
			rdb, _ := rds.DB(t)
			reg := registry.New(rdb)
			newBuild := func(status string, token int64, arts ...string) int64 {
				b, _, err := reg.CreateBuild(ctx, &registry.Build{Source: "src", Builder: "b", Language: registry.LangR, Ref: "main", SHA: strings.Repeat("a", 39) + string(rune('0'+token))}, registry.ReuseUnlessFailed)
				if err != nil {
					t.Fatal(err)
				}
				_, err = reg.UpdateBuild(ctx, b.ID, func(b *registry.Build) error {
					b.Status, b.AttemptToken, b.Package = status, token, "pkg"
					for _, a := range arts {
						b.Artifacts = append(b.Artifacts, registry.Artifact{File: a})
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				return b.ID
			}
			done := newBuild(registry.StatusSucceeded, 2, "pkg_1.tar.gz")
			running := newBuild(registry.StatusRunning, 3)
			src := t.TempDir()
			for _, f := range []string{"pkg_1.tar.gz", "extra.tar.gz"} {
				os.WriteFile(filepath.Join(src, f), []byte(f), 0o600)
			}
			put := func(build, token int64, files ...string) {
				var arts []registry.Artifact
				for _, f := range files {
					arts = append(arts, registry.Artifact{File: f})
				}
				if _, err := s.Put(ctx, "src", "pkg", build, token, src, arts); err != nil {
					t.Fatal(err)
				}
			}
			put(done, 2, "pkg_1.tar.gz", "extra.tar.gz") // named, and not listed
			put(done, 1, "pkg_1.tar.gz")                 // an earlier attempt
			put(running, 3, "pkg_1.tar.gz")              // under way
			put(999, 1, "pkg_1.tar.gz")                  // no such build
			removed := 0
			sw := &Sweeper{Store: s, Registry: reg, Grace: time.Hour, Log: testenv.Logger(t), Removed: func(n int) { removed += n }}
			if n, err := sw.Sweep(ctx, time.Now()); err != nil || n != 0 {
				t.Fatalf("within the grace period the sweep removed %d (%v)", n, err)
			}
			n, err := sw.Sweep(ctx, time.Now().Add(2*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			want := []string{Stored{Source: "src", Package: "pkg", Build: done, Token: 2, File: "pkg_1.tar.gz"}.Name(),
				Stored{Source: "src", Package: "pkg", Build: running, Token: 3, File: "pkg_1.tar.gz"}.Name()}
			slices.Sort(want)
			if got := walk(t, s); !slices.Equal(got, want) || n != 3 || removed != 3 {
				t.Fatalf("after the sweep: %v, removed %d (counted %d); want %v and 3", got, n, removed, want)
			}
		})
	}
}

// TestSweeperRunsUnderTheLease: Run sweeps while it leads.
func TestSweeperRunsUnderTheLease(t *testing.T) {
	t.Parallel()
	s, _ := NewDir(t.TempDir())
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a.tar.gz"), []byte("a"), 0o600)
	if _, err := s.Put(context.Background(), "src", "pkg", 5, 1, src, []registry.Artifact{{File: "a.tar.gz"}}); err != nil {
		t.Fatal(err)
	}
	rdb, _ := rds.DB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sw := &Sweeper{Store: s, Registry: registry.New(rdb), Redis: rdb, Owner: "t", Grace: time.Nanosecond, Every: 50 * time.Millisecond,
		Log: testenv.Logger(t), Lease: func(e *leader.Elector) { e.TTL = time.Second }}
	go sw.Run(ctx)
	testenv.Eventually(t, 10*time.Second, "the orphan to be swept", func() bool {
		var n int
		_ = s.Walk(context.Background(), func(Stored) error { n++; return nil })
		return n == 0
	})
}

// TestSweepRemovesNothingWhenNoRecordNamesMostOfTheStore: a Redis that is
// not the fleet's names nothing; the sweep then removes nothing and says
// why, instead of emptying the store.
func TestSweepRemovesNothingWhenNoRecordNamesMostOfTheStore(t *testing.T) {
	t.Parallel()
	s, _ := NewDir(t.TempDir())
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a.tar.gz"), []byte("a"), 0o600)
	for id := int64(1); id <= maxUnnamed+1; id++ {
		if _, err := s.Put(context.Background(), "src", "pkg", id, 1, src, []registry.Artifact{{File: "a.tar.gz"}}); err != nil {
			t.Fatal(err)
		}
	}
	rdb, _ := rds.DB(t)
	sw := &Sweeper{Store: s, Registry: registry.New(rdb), Grace: time.Hour, Log: testenv.Logger(t)}
	n, err := sw.Sweep(context.Background(), time.Now().Add(2*time.Hour))
	if err == nil || n != 0 || !strings.Contains(err.Error(), "removing none") {
		t.Fatalf("sweep of a store no record names: removed %d, %v", n, err)
	}
	if got := walk(t, s); len(got) != maxUnnamed+1 {
		t.Fatalf("%d files left, want all %d", len(got), maxUnnamed+1)
	}
}
