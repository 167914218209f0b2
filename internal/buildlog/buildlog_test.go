package buildlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

var rds *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &rds)) }

// stores are the artifact store's two implementations, each fresh. The
// bucket's credentials reach the AWS default chain through the
// environment, so tests that use it do not run in parallel.
func stores(t *testing.T) map[string]func(t *testing.T) store.Artifacts {
	return map[string]func(t *testing.T) store.Artifacts{
		"dir": func(t *testing.T) store.Artifacts {
			s, err := store.NewDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"s3": func(t *testing.T) store.Artifacts {
			b := testenv.S3(t)
			for _, kv := range b.Env() {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			s, err := store.NewBucket(context.Background(), config.S3Storage{Bucket: b.Bucket, Region: b.Region, Endpoint: b.Endpoint, EnablePathStyle: true, Prefix: "logs/"})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

type fixture struct {
	t    *testing.T
	reg  *registry.Registry
	logs *Logs
}

func setup(t *testing.T, st store.Artifacts) *fixture {
	rdb, _ := rds.DB(t)
	reg := registry.New(rdb)
	return &fixture{t: t, reg: reg, logs: &Logs{Registry: reg, Store: st}}
}

// running records a build running under attempt token 5 whose log holds
// text.
func (f *fixture) running(sha string, text []byte) *registry.Build {
	f.t.Helper()
	ctx := context.Background()
	b, _, err := f.reg.CreateBuild(ctx, &registry.Build{Source: "src", Builder: "b", Language: registry.LangR, Ref: "main", SHA: sha}, registry.ReuseUnlessFailed)
	if err != nil {
		f.t.Fatal(err)
	}
	b = f.set(b.ID, func(b *registry.Build) { b.Status, b.AttemptToken = registry.StatusRunning, 5 })
	if err := f.reg.AppendLog(ctx, b.ID, text, 1<<30, "test"); err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *fixture) set(id int64, edit func(*registry.Build)) *registry.Build {
	f.t.Helper()
	b, err := f.reg.UpdateBuild(context.Background(), id, func(b *registry.Build) error { edit(b); return nil })
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *fixture) read(b *registry.Build, offset int64) []byte {
	f.t.Helper()
	out, err := f.logs.Read(context.Background(), b, offset)
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// bigLog is a log of many lines, some of them alike, like a build's.
func bigLog() []byte {
	var buf bytes.Buffer
	for i := range 20000 {
		fmt.Fprintf(&buf, "* installing %d: gcc -O2 -c file%d.c -o file%d.o\n", i%97, i, i)
	}
	return buf.Bytes()
}

// TestFinishedLogReadsBackIdenticallyFromTheStore, on both stores: while
// the build runs its log is Redis's live tail; once it finished and its
// log moved, Redis holds none of it, the record names the stored file,
// and reading gives the same bytes from any offset.
func TestFinishedLogReadsBackIdenticallyFromTheStore(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := setup(t, open(t))
			text := bigLog()
			b := f.running(strings.Repeat("a", 40), text[:1000])
			if got := f.read(b, 0); !bytes.Equal(got, text[:1000]) {
				t.Fatalf("running build: read %d bytes, want the live %d", len(got), 1000)
			}
			if moved, err := f.logs.Move(ctx, b.ID); err != nil || moved {
				t.Fatalf("a running build's log moved (%v, %v)", moved, err)
			}
			if err := f.reg.AppendLog(ctx, b.ID, text[1000:], 1<<30, "test"); err != nil {
				t.Fatal(err)
			}
			if got := f.read(b, 500); !bytes.Equal(got, text[500:]) {
				t.Fatalf("the live tail from 500: %d bytes, want %d", len(got), len(text)-500)
			}
			b = f.set(b.ID, func(b *registry.Build) { b.Status, b.Package = registry.StatusSucceeded, "pkg" })
			if moved, err := f.logs.Move(ctx, b.ID); err != nil || !moved {
				t.Fatalf("move: %v, %v", moved, err)
			}
			if live, err := f.reg.Log(ctx, b.ID, 0); err != nil || len(live) != 0 {
				t.Fatalf("Redis still holds %d bytes of the finished build's log (%v)", len(live), err)
			}
			after, err := f.reg.Build(ctx, b.ID)
			if err != nil {
				t.Fatal(err)
			}
			l := after.Log
			if l == nil || l.Package != "pkg" || l.Token != 5 || l.File != registry.LogFile || l.Size != int64(len(text)) || l.Stored <= 0 || l.Stored*4 > l.Size || len(l.SHA256) != 64 {
				t.Fatalf("the record names %+v; want the log of pkg, token 5, %d bytes, compressed at least 4×", l, len(text))
			}
			for _, off := range []int64{0, 1, 12345, int64(len(text)) - 1, int64(len(text)), int64(len(text)) + 10} {
				want := text[min(off, int64(len(text))):]
				// The caller's record may be from before the move: Read
				// finds the log all the same.
				for _, rec := range []*registry.Build{b, after} {
					if got := f.read(rec, off); !bytes.Equal(got, want) {
						t.Fatalf("from offset %d: %d bytes, want %d", off, len(got), len(want))
					}
				}
			}
			if moved, err := f.logs.Move(ctx, b.ID); err != nil || moved {
				t.Fatalf("a moved log moved again (%v, %v)", moved, err)
			}
		})
	}
}

// TestCrashBetweenPutAndRecordLeavesAnOrphanTheSweepRemoves: a log put
// into the store whose record was never written is an orphan (the sweep
// removes it after the grace); a record that names a log is written only
// after its put, and the sweep keeps what it names. A log that grew
// between the read and the naming is not named: its copy is discarded.
func TestCrashBetweenPutAndRecordLeavesAnOrphanTheSweepRemoves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := setup(t, st)
	text := bigLog()
	b := f.running(strings.Repeat("b", 40), text)
	b = f.set(b.ID, func(b *registry.Build) { b.Status = registry.StatusFailed })

	// The crash: the log is put (under the builder's name, as the build
	// made no package), the record is not written.
	sl, err := f.logs.Put(ctx, b.Source, "b", b.ID, 5, text)
	if err != nil {
		t.Fatal(err)
	}
	files := func() []string {
		var out []string
		if err := st.Walk(ctx, func(s store.Stored) error { out = append(out, s.Name()); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	sweep := func() int {
		sw := &store.Sweeper{Store: st, Registry: f.reg, Grace: time.Hour, Log: testenv.Logger(t)}
		n, err := sw.Sweep(ctx, time.Now().Add(2*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := sweep(); n != 1 || len(files()) != 0 {
		t.Fatalf("the sweep removed %d, left %v; want the orphaned log gone", n, files())
	}
	if after, _ := f.reg.Build(ctx, b.ID); after.Log != nil {
		t.Fatalf("the record names a log after a crash before its write: %+v", after.Log)
	}
	if got := f.read(b, 0); !bytes.Equal(got, text) {
		t.Fatalf("the log is no longer readable from Redis after the crash")
	}

	// A log that grows between the read and the naming stays in Redis.
	rec, read, err := f.reg.FinishedLog(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.reg.AppendLog(ctx, b.ID, []byte("late line\n"), 1<<30, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.NameLog(ctx, rec, int64(len(read)), sl); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("naming a log that grew since: %v, want a conflict", err)
	}

	// Moved for real, the sweep keeps it.
	if moved, err := f.logs.Move(ctx, b.ID); err != nil || !moved {
		t.Fatalf("move: %v, %v", moved, err)
	}
	if n := sweep(); n != 0 || len(files()) != 1 {
		t.Fatalf("the sweep removed %d of a named log (left %v)", n, files())
	}
	want := append(append([]byte{}, text...), "late line\n"...)
	if got := f.read(b, 0); !bytes.Equal(got, want) {
		t.Fatalf("the moved log: %d bytes, want %d", len(got), len(want))
	}
}
