package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
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

func TestBuildCountsFollowEveryStatusChange(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	want := func(step string, w map[string]int) {
		t.Helper()
		got, err := r.CountBuildsByStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Fatalf("%s: counts %v, want %v", step, got, w)
		}
	}
	create := func(sha string) *Build {
		t.Helper()
		b, _, err := r.CreateBuild(ctx, &Build{Source: "s", Builder: "b", Language: LangR, Ref: "main", SHA: sha}, ReuseUnlessFailed)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	set := func(id int64, status string) {
		t.Helper()
		if _, err := r.UpdateBuild(ctx, id, func(b *Build) error { b.Status = status; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	want("none", map[string]int{})
	one, two := create("a1"), create("b2")
	create("a1") // reused: not a new build
	want("created", map[string]int{StatusQueued: 2})

	set(one.ID, StatusWaiting)
	set(one.ID, StatusWaiting) // no change of status
	if _, err := r.UpdateBuild(ctx, two.ID, func(b *Build) error { b.Status = StatusRunning; return errors.New("refused") }); err == nil {
		t.Fatal("a refused edit was written")
	}
	want("waiting", map[string]int{StatusQueued: 1, StatusWaiting: 1})

	// Fenced writes of an attempt count too; a stale attempt's do not.
	_, _, stale, err := r.BeginAttempt(ctx, one.ID, 1, "A")
	if err != nil {
		t.Fatal(err)
	}
	_, _, cur, err := r.BeginAttempt(ctx, one.ID, 2, "B")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateBuildAs(ctx, stale, func(b *Build) error { b.Status = StatusFailed; return nil }); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("a stale attempt's write: %v", err)
	}
	if _, err := r.UpdateBuildWithLogAs(ctx, cur, []byte("log"), 100, "x", func(b *Build) error { b.Status = StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	want("running", map[string]int{StatusQueued: 1, StatusRunning: 1})
	if _, err := r.UpdateBuildAs(ctx, cur, func(b *Build) error { b.Status = StatusSucceeded; return nil }); err != nil {
		t.Fatal(err)
	}
	set(two.ID, StatusCanceled)
	want("finished", map[string]int{StatusSucceeded: 1, StatusCanceled: 1})

	// A store written before the counts existed is counted once, by the
	// first reader; writes after it count on from there.
	r.rdb.Del(ctx, keyBuildCounts)
	want("migrated", map[string]int{StatusSucceeded: 1, StatusCanceled: 1})
	create("c3")
	want("after the migration", map[string]int{StatusQueued: 1, StatusSucceeded: 1, StatusCanceled: 1})
}

func TestBuildCountsDoNotDriftUnderConcurrentWriters(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	if _, err := r.CountBuildsByStatus(ctx); err != nil { // counting from the start
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				b, _, err := r.CreateBuild(ctx, &Build{Source: "s", Builder: "b", Language: LangR, Ref: "main", SHA: fmt.Sprint((w + i) % 5)}, ReuseActive)
				if err != nil {
					t.Error(err)
					return
				}
				// Writers share the five commits, so they race on one build.
				next := []string{StatusWaiting, StatusRunning, StatusFailed}[i%3]
				if _, err := r.UpdateBuild(ctx, b.ID, func(b *Build) error { b.Status = next; return nil }); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got, err := r.CountBuildsByStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := r.Builds(ctx, Filter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	walked := map[string]int{}
	for _, b := range all {
		walked[b.Status]++
	}
	if fmt.Sprint(got) != fmt.Sprint(walked) {
		t.Fatalf("counts %v, a walk of every build %v", got, walked)
	}
}

// BenchmarkFirstCountOfAStoreWithoutCounts times the one walk that counts
// a store written before the counters existed: 100,000 builds and 1,000
// builders, counted inside one script each (Redis serves nothing else
// meanwhile).
func BenchmarkFirstCountOfAStoreWithoutCounts(b *testing.B) {
	r, ctx := setup(b), context.Background()
	const builds, builders = 100000, 1000
	pipe := r.rdb.Pipeline()
	for i := 1; i <= builds; i++ {
		pipe.Set(ctx, keyBuild(int64(i)), fmt.Sprintf(`{"id":%d,"source":"s","builder":"b","status":%q}`, i, statuses[i%len(statuses)]), 0)
		pipe.ZAdd(ctx, keyBuilds, redis.Z{Score: float64(i), Member: i})
		if i <= builders {
			pipe.HSet(ctx, keyBuilders, fmt.Sprintf("s/b%d", i), `{"source":"s","language":"r","build_trigger":"commits"}`)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r.rdb.Del(ctx, keyBuildCounts, keyBuilderCounts)
		n, err := r.CountBuildsByStatus(ctx)
		if err != nil || n[StatusQueued] != builds/len(statuses) {
			b.Fatalf("counts %v, %v", n, err)
		}
		if c, err := r.CountBuildersByKind(ctx); err != nil || c.Commits() != builders {
			b.Fatalf("counts %v, %v", c, err)
		}
	}
}
