package registry

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

func setup(t testing.TB) *Registry {
	t.Helper()
	rdb, _ := redisServer.DB(t)
	return New(rdb)
}

func TestSourcesAreUniqueAndTyped(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	if _, err := r.CreateSource(ctx, Source{Name: "internal", Type: TypeGit}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateSource(ctx, Source{Name: "internal", Type: TypeGitPython}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate source: %v", err)
	}
	var ve *ValidationError
	for _, bad := range []Source{{Name: "a/b", Type: TypeGit}, {Name: "..", Type: TypeGit}, {Name: "x", Type: "cran"}, {Name: "", Type: TypeGit}} {
		if _, err := r.CreateSource(ctx, bad); !errors.As(err, &ve) {
			t.Errorf("CreateSource(%+v) = %v, want a validation error", bad, err)
		}
	}
	list, _ := r.Sources(ctx)
	if len(list) != 1 || list[0].Language() != LangR {
		t.Fatalf("sources = %+v", list)
	}
}

func TestBuilderValidationStoresNothingOnBadInput(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	r.CreateSource(ctx, Source{Name: "s", Type: TypeGit})
	p := Policy{URLs: git.URLPolicy{}}
	bad := []Builder{
		{Name: "x", URL: "ext::sh -c id"},
		{Name: "x", URL: "file:///srv/x"},
		{Name: "x", URL: "https://h/x", SubDir: "../../etc"},
		{Name: "x", URL: "https://h/x", SubDir: "/abs"},
		{Name: "x", URL: "https://h/x", BuildTrigger: "pushes"},
		{Name: "x", URL: "https://h/x", TagPattern: "v*"}, // pattern without tags trigger
		{Name: "x", URL: "https://h/x", BuildTrigger: TriggerTags, TagPattern: "[v"},
		{Name: "x", URL: "https://h/x", Branch: "--upload-pack=x"},
		{Name: "x", URL: "https://h/x", CloneDepth: -1},
		{Name: "../x", URL: "https://h/x"},
		// The door's overrides: no secrets in a builder, the right language, a real index URL.
		{Name: "x", URL: "https://h/x", Language: LangPython, PythonIndexURL: "https://user:token@mirror.invalid/simple/"},
		{Name: "x", URL: "https://h/x", Language: LangR, PythonIndexURL: "https://mirror.invalid/simple/"},
		{Name: "x", URL: "https://h/x", Language: LangR, RRepositoryURL: "ftp://mirror.invalid/cran"},
		{Name: "x", URL: "https://h/x", Language: LangPython, BuildVignettes: true},
	}
	for _, b := range bad {
		b.Source = "s"
		var ve *ValidationError
		if err := p.ValidateBuilder(&b); !errors.As(err, &ve) {
			t.Errorf("ValidateBuilder(%+v) = %v, want a validation error", b, err)
		}
	}
	if list, _ := r.Builders(ctx, ""); len(list) != 0 {
		t.Fatalf("builders stored: %+v", list)
	}
	withDoor := Builder{Source: "s", Name: "py", URL: "https://h/x", Language: LangPython, PythonIndexURL: "https://mirror.invalid/simple/"}
	if err := p.ValidateBuilder(&withDoor); err != nil {
		t.Errorf("a builder with its own index: %v", err)
	}
	good := Builder{Source: "s", Name: "pkg", URL: "https://h/x", SubDir: "pkgs/a"}
	if err := p.ValidateBuilder(&good); err != nil || good.BuildTrigger != TriggerCommits {
		t.Fatalf("good builder: %v, trigger %q", err, good.BuildTrigger)
	}
	if err := r.CreateBuilder(ctx, &good); err != nil {
		t.Fatal(err)
	}
	if err := r.CreateBuilder(ctx, &good); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate builder: %v", err)
	}
	if err := r.DeleteSource(ctx, "s"); !errors.Is(err, ErrConflict) {
		t.Fatalf("deleting a source with builders: %v", err)
	}
}

func TestConcurrentClaimsOfOneCommitMakeOneBuild(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	sha := strings.Repeat("a", 40)
	var wg sync.WaitGroup
	ids := make(chan int64, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _, err := r.CreateBuild(ctx, &Build{Source: "s", Builder: "b", Language: LangR, SHA: sha, Ref: "main"}, ReuseUnlessFailed)
			if err != nil {
				t.Error(err)
				return
			}
			ids <- b.ID
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[int64]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 {
		t.Fatalf("20 concurrent claims made builds %v, want one", seen)
	}
}

func TestFailedBuildCanBeRebuiltButSucceededOnlyByRerun(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	req := &Build{Source: "s", Builder: "b", Language: LangR, SHA: strings.Repeat("b", 40)}
	first, created, _ := r.CreateBuild(ctx, req, ReuseUnlessFailed)
	if !created || first.Status != StatusQueued {
		t.Fatalf("first = %+v created %v", first, created)
	}
	// The stored record is the one returned, under its own id.
	if got, err := r.Build(ctx, first.ID); err != nil || got.ID != first.ID || got.SHA != req.SHA || !got.CreatedAt.Equal(first.CreatedAt) || got.Artifacts == nil {
		t.Fatalf("stored %+v (%v), returned %+v", got, err, first)
	}
	r.UpdateBuild(ctx, first.ID, func(b *Build) error { b.Status = StatusFailed; return nil })
	second, created, _ := r.CreateBuild(ctx, req, ReuseUnlessFailed)
	if !created || second.ID == first.ID {
		t.Fatal("a failed build's commit was not rebuilt")
	}
	r.UpdateBuild(ctx, second.ID, func(b *Build) error { b.Status = StatusSucceeded; return nil })
	if again, created, _ := r.CreateBuild(ctx, req, ReuseUnlessFailed); created || again.ID != second.ID {
		t.Fatal("a succeeded commit was rebuilt by a run")
	}
	if rerun, created, _ := r.CreateBuild(ctx, req, ReuseActive); !created || rerun.ID == second.ID {
		t.Fatal("rerun did not rebuild a succeeded commit")
	}
	list, _ := r.Builds(ctx, Filter{Source: "s", Builder: "b"})
	if len(list) != 3 || list[0].ID < list[2].ID {
		t.Fatalf("builds = %d, want 3 newest first", len(list))
	}
	if l, _ := r.Builds(ctx, Filter{Status: StatusSucceeded}); len(l) != 1 {
		t.Fatalf("status filter: %d builds", len(l))
	}
}

func TestLogIsCappedWithAVisibleMark(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	for range 10 {
		if err := r.AppendLog(ctx, 7, []byte(strings.Repeat("x", 40)), 100, "100B"); err != nil {
			t.Fatal(err)
		}
	}
	log, _ := r.Log(ctx, 7, 0)
	if !strings.HasPrefix(string(log), strings.Repeat("x", 100)+"\n[pkgfleet: log truncated") || strings.Count(string(log), "truncated") != 1 {
		t.Fatalf("log = %q", log)
	}
	tail, _ := r.Log(ctx, 7, 100)
	if !strings.Contains(string(tail), "100B limit") {
		t.Fatalf("log from offset 100 = %q", tail)
	}
}
