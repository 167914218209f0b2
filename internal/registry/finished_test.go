package registry

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestAFinishedBuildIsListedOnceByTheWriteThatFinishesIt: the id goes on
// KeyFinished in the script that writes the finishing record, through
// either write path (a worker's fenced attempt, or an unfenced update
// such as a cancel), and never again when a finished record is edited.
func TestAFinishedBuildIsListedOnceByTheWriteThatFinishesIt(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	newBuild := func(sha string) *Build {
		b, _, err := r.CreateBuild(ctx, &Build{Source: "s", Builder: "b", Language: LangR, Ref: "main", SHA: strings.Repeat(sha, 40)}, ReuseActive)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	set := func(status string) func(*Build) error {
		return func(b *Build) error { b.Status = status; return nil }
	}
	byWorker, byCancel := newBuild("a"), newBuild("b")
	_, _, a, err := r.BeginAttempt(ctx, byWorker.ID, 1, "w1")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{StatusRunning, StatusFailed, StatusFailed} {
		if _, err := r.UpdateBuildAs(ctx, a, set(s)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{StatusWaiting, StatusCanceled, StatusCanceled} {
		if _, err := r.UpdateBuild(ctx, byCancel.ID, set(s)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.UpdateBuild(ctx, byWorker.ID, func(b *Build) error { b.Detail = "edited after"; return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := r.Finished(ctx, 10)
	if want := []int64{byWorker.ID, byCancel.ID}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("finished = %v %v, want %v", got, err, want)
	}
}
