package pipeline

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/recipe"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// checking is a recipe that builds as succeed does and says verdict, after
// checking that the pipeline asked for the check and gave R its library.
func checking(t *testing.T, verdict string) func(context.Context, recipe.Input) (*recipe.Output, error) {
	return func(ctx context.Context, in recipe.Input) (*recipe.Output, error) {
		if st, err := os.Stat(in.Library); !in.Check || err != nil || !st.IsDir() {
			t.Errorf("input Check %v, Library %q (%v): want the check asked for and the library made", in.Check, in.Library, err)
		}
		out, err := succeed(ctx, in)
		if err == nil {
			out.Check = &registry.Check{Verdict: verdict, Warnings: 1, Summary: "R CMD check: 1 WARNING; checking x ... WARNING"}
		}
		return out, err
	}
}

func (b *bundle) checks(gates bool) {
	b.t.Helper()
	if _, err := b.reg.UpdateBuilder(context.Background(), "src", "p", func(bl *registry.Builder) error {
		bl.Check, bl.CheckGates = true, gates
		return nil
	}); err != nil {
		b.t.Fatal(err)
	}
}

func TestAGatedWarningFailsTheBuildForGoodUnpublished(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	b.checks(true)
	b.build = checking(t, registry.CheckWarning)
	id := b.queued(3)
	if err := b.p.process(context.Background(), id, 1, 3); !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("a gated WARNING returned %v, want SkipRetry (it would say the same again)", err)
	}
	got := b.get(id)
	want := "R CMD check: 1 WARNING; checking x ... WARNING (check_gates: not published)"
	if got.Status != registry.StatusFailed || got.Detail != want || len(got.Artifacts) != 0 || got.Check == nil || !got.Check.Gated {
		t.Fatalf("build = %s %q, artifacts %+v, check %+v; want failed with %q, nothing published, the check gated", got.Status, got.Detail, got.Artifacts, got.Check, want)
	}
	if _, err := b.p.store.Open(context.Background(), "src", "p", id, got.AttemptToken, "p_1.1.tar.gz"); err == nil {
		t.Fatal("the gated build's tarball is in the store")
	}
}

func TestAGatedCheckThatCouldNotRunIsRetried(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	b.checks(true)
	b.build = checking(t, registry.CheckFailed)
	id := b.queued(2)
	if err := b.p.process(context.Background(), id, 1, 3); err == nil || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("a gated check that could not run returned %v, want an error asynq retries", err)
	}
	if got := b.get(id); got.Status != registry.StatusQueued || !strings.HasPrefix(got.Detail, "attempt 1 of 2 failed, will retry: ") || got.Check == nil {
		t.Fatalf("build = %s %q (check %+v), want queued for a retry with the check recorded", got.Status, got.Detail, got.Check)
	}
}

func TestAnUngatedWarningIsRecordedAndPublished(t *testing.T) {
	b := setup(t, registry.TriggerCommits)
	b.checks(false)
	b.build = checking(t, registry.CheckWarning)
	id := b.queued(2)
	if err := b.p.process(context.Background(), id, 1, 2); err != nil {
		t.Fatalf("an ungated WARNING returned %v, want nil", err)
	}
	got := b.get(id)
	if got.Status != registry.StatusSucceeded || len(got.Artifacts) != 1 || got.Check == nil || got.Check.Verdict != registry.CheckWarning || got.Check.Gated {
		t.Fatalf("build = %s, artifacts %+v, check %+v; want succeeded, published, the WARNING recorded", got.Status, got.Artifacts, got.Check)
	}
	check := false
	for _, p := range got.Phases {
		check = check || p.Phase == registry.PhaseCheck
	}
	if !check {
		t.Fatalf("phases %+v lack the check", got.Phases)
	}
}
