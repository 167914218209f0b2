package registry

import (
	"context"
	"fmt"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func TestBuilderCountsFollowCreateEditAndDelete(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	r.CreateSource(ctx, Source{Name: "r", Type: TypeGit})
	r.CreateSource(ctx, Source{Name: "py", Type: TypeGitPython})
	want := func(step string, w BuilderCounts) {
		t.Helper()
		got, err := r.CountBuildersByKind(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Fatalf("%s: counts %v, want %v", step, got, w)
		}
	}
	create := func(src, name, trigger string) {
		t.Helper()
		if err := r.CreateBuilder(ctx, &Builder{Source: src, Name: name, URL: "https://h/x", BuildTrigger: trigger}); err != nil {
			t.Fatal(err)
		}
	}
	want("none", BuilderCounts{})
	create("r", "a", TriggerCommits)
	create("r", "b", TriggerTags)
	create("py", "c", TriggerCommits)
	if err := r.CreateBuilder(ctx, &Builder{Source: "r", Name: "a", URL: "https://h/y", BuildTrigger: TriggerTags}); err == nil {
		t.Fatal("a second builder a was created")
	}
	want("created", BuilderCounts{{LangR, TriggerCommits}: 1, {LangR, TriggerTags}: 1, {LangPython, TriggerCommits}: 1})

	if _, err := r.UpdateBuilder(ctx, "r", "a", func(b *Builder) error { b.BuildTrigger = TriggerTags; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateBuilder(ctx, "py", "c", func(b *Builder) error { b.Branch = "dev"; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateBuilder(ctx, "py", "c", func(b *Builder) error { b.BuildTrigger = TriggerTags; return fmt.Errorf("refused") }); err == nil {
		t.Fatal("a refused edit was stored")
	}
	want("edited", BuilderCounts{{LangR, TriggerTags}: 2, {LangPython, TriggerCommits}: 1})

	if err := r.DeleteBuilder(ctx, "r", "b"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteBuilder(ctx, "r", "b"); err == nil {
		t.Fatal("deleted b twice")
	}
	want("deleted", BuilderCounts{{LangR, TriggerTags}: 1, {LangPython, TriggerCommits}: 1})
	if n, _ := r.CountBuilders(ctx, "r"); n != 1 {
		t.Fatalf("the index holds %d builders of r after the delete, want 1", n)
	}

	// A store written before the counts existed is counted once, by the
	// first reader; the writes after it count on from there.
	r.rdb.Del(ctx, keyBuilderCounts)
	want("migrated", BuilderCounts{{LangR, TriggerTags}: 1, {LangPython, TriggerCommits}: 1})
	create("py", "d", TriggerTags)
	want("after the migration", BuilderCounts{{LangR, TriggerTags}: 1, {LangPython, TriggerCommits}: 1, {LangPython, TriggerTags}: 1})
}

func TestCountingBuildersIsOneCommandWhateverTheFleet(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	r.CreateSource(ctx, Source{Name: "r", Type: TypeGit})
	counter := &testenv.CommandCounter{}
	r.rdb.AddHook(counter)
	for n := range 200 {
		if n == 1 || n == 199 {
			counter.Reset()
			got, err := r.CountBuildersByKind(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got.Commits() != n {
				t.Fatalf("%d commit builders counted, want %d", got.Commits(), n)
			}
			// EVALSHA, and EVAL only the first time a script is loaded.
			if sent, by := counter.Total(); sent > 2 || by["evalsha"]+by["eval"] != sent {
				t.Fatalf("counting %d builders sent %d Redis commands: %v", n, sent, by)
			}
		}
		if err := r.CreateBuilder(ctx, &Builder{Source: "r", Name: fmt.Sprintf("b%03d", n), URL: "https://h/x", BuildTrigger: TriggerCommits}); err != nil {
			t.Fatal(err)
		}
	}
}
