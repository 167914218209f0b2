package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/redis/go-redis/v9"
)

func newBuild(t *testing.T, r *Registry) *Build {
	t.Helper()
	ctx := context.Background()
	b, _, err := r.CreateBuild(ctx, &Build{Source: "s", Builder: "b", Language: LangPython, Ref: "main", SHA: "abc"}, ReuseActive)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAStaleAttemptsWritesAreRefusedAndNamedBySuccessor(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	b := newBuild(t, r)
	_, _, a1, err := r.BeginAttempt(ctx, b.ID, 1, "A")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateBuildAs(ctx, a1, func(b *Build) error { b.Status = StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := r.AppendLogAs(ctx, a1, []byte("from A\n"), 1<<20, "1MiB"); err != nil {
		t.Fatal(err)
	}
	_, _, a2, _ := r.BeginAttempt(ctx, b.ID, 2, "B")
	if a2.Token <= a1.Token {
		t.Fatalf("tokens %d then %d: want increasing", a1.Token, a2.Token)
	}
	if _, err := r.UpdateBuildAs(ctx, a2, func(b *Build) error { b.Status, b.Worker = StatusRunning, "B"; return nil }); err != nil {
		t.Fatal(err)
	}

	// A comes back: each of its writes is refused and says who took over.
	_, err = r.UpdateBuildAs(ctx, a1, func(b *Build) error { b.Status, b.Detail = StatusQueued, "interrupted on worker A"; return nil })
	var se *SupersededError
	if !errors.As(err, &se) || !errors.Is(err, ErrSuperseded) {
		t.Fatalf("stale update: %v, want a SupersededError", err)
	}
	if want := fmt.Sprintf("superseded by attempt 2 (token %d) on worker B", a2.Token); err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	if err := r.AppendLogAs(ctx, a1, []byte("late line from A\n"), 1<<20, "1MiB"); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("stale log append: %v", err)
	}
	if err := r.ConfirmAttempt(ctx, a1, "", ""); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("stale confirm: %v", err)
	}
	if err := r.ConfirmAttempt(ctx, a2, "", ""); err != nil {
		t.Fatalf("current confirm: %v", err)
	}
	got, _ := r.Build(ctx, b.ID)
	if got.Status != StatusRunning || got.Worker != "B" || got.AttemptToken != a2.Token {
		t.Fatalf("record after A's late write: %+v", got)
	}
	log, _ := r.Log(ctx, b.ID, 0)
	if strings.Contains(string(log), "late line") {
		t.Fatalf("a stale log line was written: %q", log)
	}
}

func TestConfirmAttemptSeesALostTaskLeaseAndACancel(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	b := newBuild(t, r)
	_, _, a, _ := r.BeginAttempt(ctx, b.ID, 1, "A")
	r.rdb.ZAdd(ctx, "lease", redis.Z{Score: 1, Member: "task-1"})
	if err := r.ConfirmAttempt(ctx, a, "lease", "task-1"); err != nil {
		t.Fatal(err)
	}
	r.rdb.ZRem(ctx, "lease", "task-1")
	if err := r.ConfirmAttempt(ctx, a, "lease", "task-1"); !errors.Is(err, ErrTaskLeaseLost) {
		t.Fatalf("confirm without the task's lease: %v", err)
	}
	r.UpdateBuild(ctx, b.ID, func(b *Build) error { b.Status = StatusCanceled; return nil })
	if err := r.ConfirmAttempt(ctx, a, "", ""); !errors.Is(err, ErrBuildCanceled) {
		t.Fatalf("confirm of a canceled build: %v", err)
	}
}

func TestFencedUpdatesOfTheCurrentAttemptAllLand(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	b := newBuild(t, r)
	_, _, a, _ := r.BeginAttempt(ctx, b.ID, 1, "A")
	// Concurrent writers of one attempt (log flusher, status) retry on
	// a changed record instead of losing an edit.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.UpdateBuildAs(ctx, a, func(b *Build) error {
				b.SetPhase(apiv1.PhaseOrder[i%len(apiv1.PhaseOrder)], time.Duration(i)*time.Millisecond)
				b.Attempts++
				return nil
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, _ := r.Build(ctx, b.ID)
	if got.Attempts != 20 {
		t.Fatalf("%d of 20 edits landed", got.Attempts)
	}
}

func TestPhasesKeepTheContractOrderAndJSON(t *testing.T) {
	t.Parallel()
	var b Build
	b.SetPhase(PhaseStore, 3*time.Millisecond)
	b.SetPhase(PhaseQueued, 12500*time.Microsecond)
	b.SetPhase(PhaseClone, time.Millisecond)
	b.SetPhase(PhaseQueued, 12500*time.Microsecond) // replaced, not doubled
	out, _ := json.Marshal(b.Phases)
	if want := `[{"phase":"queued","ms":12.5},{"phase":"clone","ms":1},{"phase":"store","ms":3}]`; string(out) != want {
		t.Fatalf("phases %s, want %s", out, want)
	}
}

func TestBeginAttemptReadsBuildAndBuilderAndSkipsFinishedBuilds(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	if _, err := r.CreateSource(ctx, Source{Name: "s", Type: TypeGitPython}); err != nil {
		t.Fatal(err)
	}
	if err := r.CreateBuilder(ctx, &Builder{Source: "s", Name: "b", URL: "https://h/x"}); err != nil {
		t.Fatal(err)
	}
	b := newBuild(t, r)
	got, bl, a, err := r.BeginAttempt(ctx, b.ID, 1, "A")
	if err != nil || got.ID != b.ID || got.Status != StatusQueued || bl == nil || bl.URL != "https://h/x" || a.Token <= 0 || a.Worker != "A" {
		t.Fatalf("begin: %+v %+v %+v %v", got, bl, a, err)
	}
	// A deleted builder: the attempt begins (to record why it cannot run).
	if err := r.DeleteBuilder(ctx, "s", "b"); err != nil {
		t.Fatal(err)
	}
	first := a
	_, bl, a, err = r.BeginAttempt(ctx, b.ID, 2, "A")
	if err != nil || bl != nil || a.Token <= first.Token {
		t.Fatalf("begin without a builder: %+v %+v %v", bl, a, err)
	}
	second := a
	// A finished build: no attempt begins, so the current one stays.
	r.UpdateBuild(ctx, b.ID, func(b *Build) error { b.Status = StatusSucceeded; return nil })
	if got, _, a, err := r.BeginAttempt(ctx, b.ID, 3, "B"); err != nil || got.Status != StatusSucceeded || a.Token != 0 {
		t.Fatalf("begin of a finished build: %+v %+v %v", got, a, err)
	}
	if err := r.ConfirmAttempt(ctx, Attempt{Build: b.ID, Token: second.Token}, "", ""); err != nil {
		t.Fatalf("the current attempt after a refused begin: %v", err)
	}
	if _, _, _, err := r.BeginAttempt(ctx, 99999, 1, "A"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("begin of a missing build: %v", err)
	}
}

func TestARecordWriteAndItsLogLandTogetherOrNotAtAll(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	b := newBuild(t, r)
	_, _, a1, _ := r.BeginAttempt(ctx, b.ID, 1, "A")
	if _, err := r.UpdateBuildWithLogAs(ctx, a1, []byte("started\n"), 1<<20, "1MiB", func(b *Build) error { b.Status = StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	// Someone else (the API's cancel) writes meanwhile: the attempt's
	// next edit sees that write, not the record as it last wrote it.
	r.UpdateBuild(ctx, b.ID, func(b *Build) error { b.Status = StatusCanceled; return nil })
	declined := errors.New("canceled meanwhile")
	var saw string
	_, err := r.UpdateBuildWithLogAs(ctx, a1, []byte("declined\n"), 1<<20, "1MiB", func(b *Build) error {
		saw = b.Status
		if b.Status == StatusCanceled {
			return declined
		}
		b.Status = StatusSucceeded
		return nil
	})
	if !errors.Is(err, declined) || saw != StatusCanceled {
		t.Fatalf("edit saw %q and returned %v; want the cancel seen and the edit's error", saw, err)
	}
	// A stale attempt's record write and log are both refused (the build
	// is made unfinished again, or no attempt could begin).
	r.UpdateBuild(ctx, b.ID, func(b *Build) error { b.Status = StatusQueued; return nil })
	_, _, a2, _ := r.BeginAttempt(ctx, b.ID, 2, "B")
	if _, err := r.UpdateBuildWithLogAs(ctx, a1, []byte("stale\n"), 1<<20, "1MiB", func(b *Build) error { b.Detail = "stale"; return nil }); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("stale write: %v", err)
	}
	if _, err := r.UpdateBuildWithLogAs(ctx, a2, []byte("done\n"), 1<<20, "1MiB", func(b *Build) error { b.Status = StatusSucceeded; return nil }); err != nil {
		t.Fatal(err)
	}
	got, _ := r.Build(ctx, b.ID)
	log, _ := r.Log(ctx, b.ID, 0)
	if got.Status != StatusSucceeded || got.Detail != "" || got.AttemptToken != a2.Token || string(log) != "started\ndone\n" {
		t.Fatalf("record %+v, log %q", got, log)
	}
}

func TestARecordNamingItsStoredLogDropsRedisCopyOnlyAsLongAsItWasStored(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	b := newBuild(t, r)
	_, _, a, _ := r.BeginAttempt(ctx, b.ID, 1, "A")
	if _, err := r.UpdateBuildWithLogAs(ctx, a, []byte("started\n"), 1<<20, "1MiB", func(b *Build) error { b.Status = StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	stored := &StoredLog{Package: "p", Token: a.Token, File: LogFile, Size: 8}
	finish := func(b *Build) error { b.Status, b.Log = StatusSucceeded, stored; return nil }
	// Stored from 8 bytes; a line appended since makes the copy stale.
	if err := r.AppendLog(ctx, b.ID, []byte("late\n"), 1<<20, "1MiB"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateBuildDroppingLogAs(ctx, a, 8, finish); !errors.Is(err, ErrLogChanged) || !errors.Is(err, ErrConflict) {
		t.Fatalf("naming a stored copy of a log that grew since: %v, want ErrLogChanged", err)
	}
	got, _ := r.Build(ctx, b.ID)
	log, _ := r.Log(ctx, b.ID, 0)
	if got.Status != StatusRunning || got.Log != nil || string(log) != "started\nlate\n" {
		t.Fatalf("a refused write changed the record %+v or the log %q", got, log)
	}
	// As long as it was stored: the record names it, Redis's copy goes.
	stored.Size = 13
	if _, err := r.UpdateBuildDroppingLogAs(ctx, a, 13, finish); err != nil {
		t.Fatal(err)
	}
	got, _ = r.Build(ctx, b.ID)
	log, _ = r.Log(ctx, b.ID, 0)
	if got.Status != StatusSucceeded || got.Log == nil || got.Log.Size != 13 || len(log) != 0 {
		t.Fatalf("record %+v (log %+v), Redis's log %q", got, got.Log, log)
	}
	if n, _ := r.CountBuildsByStatus(ctx); n[StatusSucceeded] != 1 {
		t.Errorf("build counts %v: the finishing write was not counted", n)
	}
	// Without an attempt there is nothing to name it by.
	if _, err := r.UpdateBuildDroppingLogAs(ctx, Attempt{Build: b.ID}, 0, finish); err == nil {
		t.Error("an unfenced write named a stored log")
	}
}

func TestAnUnreadableBuildRecordIsLeftOutOfListingsAndSaid(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	var ids []int64
	for range 3 {
		b, _, err := r.CreateBuild(ctx, &Build{Source: "s", Builder: "b", Language: LangPython, Ref: "main", SHA: fmt.Sprint(len(ids))}, ReuseUnlessFailed)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, b.ID)
	}
	if err := r.rdb.Set(ctx, keyBuild(ids[1]), `{"id":`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	var said []string
	r.OnUnreadable = func(key string, err error) { said = append(said, key) }
	for _, f := range []Filter{{}, {Source: "s", Builder: "b"}} {
		said = nil
		got, err := r.Builds(ctx, f)
		if err != nil {
			t.Fatalf("listing %+v with one unreadable record: %v", f, err)
		}
		if len(got) != 2 || got[0].ID != ids[2] || got[1].ID != ids[0] {
			t.Fatalf("listing %+v = %d builds, want the two readable ones, newest first", f, len(got))
		}
		if len(said) != 1 || said[0] != keyBuild(ids[1]) {
			t.Fatalf("OnUnreadable heard %v, want %s", said, keyBuild(ids[1]))
		}
	}
}
