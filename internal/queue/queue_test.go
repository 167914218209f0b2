package queue

import (
	"errors"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

func TestTaskIDIsDerivedFromSourceBuilderAndCommit(t *testing.T) {
	t.Parallel()
	a := TaskID("src", "pkg", "abc")
	if a != TaskID("src", "pkg", "abc") {
		t.Fatal("the same commit must get the same task id")
	}
	for _, other := range []string{TaskID("src", "pkg", "abd"), TaskID("src", "pkh", "abc"), TaskID("srd", "pkg", "abc"), TaskID("srcp", "kg", "abc")} {
		if other == a {
			t.Fatalf("different builds share task id %s", a)
		}
	}
	if Queue("r") != "builds:r" || Queue("python") != "builds:python" {
		t.Fatal("queue names must be builds:<language>")
	}
}

// asynq archives a task whose retries reached MaxRetry before it asks
// IsFailure: a task keeps one spare, so a last attempt can go back too.
func TestATaskKeepsOneSpareRetry(t *testing.T) {
	t.Parallel()
	if spareRetry(3) != 3 || spareRetry(1) != 1 || spareRetry(0) != 1 {
		t.Errorf("spareRetry(3, 1, 0) = %d, %d, %d; want 3, 1, 1", spareRetry(3), spareRetry(1), spareRetry(0))
	}
}

func TestLatestIsTheBranchHeadOrTheNewestMatchingTag(t *testing.T) {
	t.Parallel()
	refs := &git.Refs{
		Head:     "main",
		Branches: map[string]string{"main": "m1", "dev": "d1"},
		Tags:     map[string]string{"v1.9": "t19", "v1.10": "t110", "rc-2": "r2"},
	}
	for _, tc := range []struct {
		b        registry.Builder
		ref, sha string
		noRef    bool
	}{
		{b: registry.Builder{}, ref: "main", sha: "m1"},
		{b: registry.Builder{Branch: "dev"}, ref: "dev", sha: "d1"},
		{b: registry.Builder{Branch: "gone"}, noRef: true},
		{b: registry.Builder{BuildTrigger: registry.TriggerTags, TagPattern: "v*"}, ref: "v1.10", sha: "t110"},
		{b: registry.Builder{BuildTrigger: registry.TriggerTags, TagPattern: "x*"}, noRef: true},
	} {
		ref, sha, err := Latest(&tc.b, refs)
		if tc.noRef {
			if !errors.Is(err, ErrNoRef) {
				t.Errorf("%+v: err = %v, want ErrNoRef", tc.b, err)
			}
			continue
		}
		if err != nil || ref != tc.ref || sha != tc.sha {
			t.Errorf("%+v: Latest = %q, %q, %v; want %q, %q", tc.b, ref, sha, err, tc.ref, tc.sha)
		}
	}
}
