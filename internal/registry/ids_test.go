package registry

import (
	"context"
	"fmt"
	"testing"
)

func createBuildOf(t *testing.T, r *Registry, sha string) *Build {
	t.Helper()
	b, created, err := r.CreateBuild(context.Background(), &Build{Source: "s", Builder: "b", Language: LangPython, Ref: "main", SHA: sha}, ReuseActive)
	if err != nil || !created {
		t.Fatalf("create build of %s: %v (created %v)", sha, err, created)
	}
	return b
}

// loseWrites makes Redis look as it would after losing the writes that
// created builds after keep: the counter and the records go back.
func loseWrites(t *testing.T, r *Registry, keep int64, upTo int64) {
	t.Helper()
	ctx := context.Background()
	if err := r.rdb.Set(ctx, keyBuildSeq, keep, 0).Err(); err != nil {
		t.Fatal(err)
	}
	for id := keep + 1; id <= upTo; id++ {
		r.rdb.Del(ctx, keyBuild(id), keyAttempt(id))
		r.rdb.ZRem(ctx, keyBuilds, id)
	}
}

func TestAProcessNeverHandsOutABuildIDItHasSeenAfterRedisLostWrites(t *testing.T) {
	t.Parallel()
	r := setup(t)
	var jumps []IDJump
	r.OnIDJump = func(j IDJump) { jumps = append(jumps, j) }
	for i := range 3 {
		if b := createBuildOf(t, r, fmt.Sprint("sha", i)); b.ID != int64(i+1) {
			t.Fatalf("build %d got id %d: ids start at 1 with no jump", i, b.ID)
		}
	}
	loseWrites(t, r, 1, 3)

	b := createBuildOf(t, r, "after")
	if b.ID != 3+IDGap+1 {
		t.Fatalf("after the loss the id is %d, want %d (past the high-water mark 3 by IDGap)", b.ID, 3+IDGap+1)
	}
	if len(jumps) != 1 || jumps[0].Reason != "behind this process's high-water mark" || jumps[0].Counter != 1 || jumps[0].HighMark != 3 {
		t.Fatalf("jumps %+v, want one, behind the mark, from 1", jumps)
	}
	if b := createBuildOf(t, r, "next"); b.ID != 3+IDGap+2 {
		t.Fatalf("the next id is %d: after a jump ids go on by one", b.ID)
	}
}

func TestAFreshProcessMovesPastIDsAnotherRedisProcessMayHaveHandedOut(t *testing.T) {
	t.Parallel()
	r := setup(t)
	createBuildOf(t, r, "a")
	createBuildOf(t, r, "b")
	// An older AOF restored, or a replica promoted: the counter was last
	// counted by another Redis process, and a process that knows nothing
	// (no high-water mark) creates the next build.
	loseWrites(t, r, 1, 2)
	if err := r.rdb.Set(context.Background(), keyBuildSeqRun, "another-redis-process", 0).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := New(r.rdb)
	var jumps []IDJump
	fresh.OnIDJump = func(j IDJump) { jumps = append(jumps, j) }
	if b := createBuildOf(t, fresh, "c"); b.ID != 1+IDGap+1 {
		t.Fatalf("id %d after another Redis process, want %d", b.ID, 1+IDGap+1)
	}
	if len(jumps) != 1 || jumps[0].Reason != "new redis process" {
		t.Fatalf("jumps %+v", jumps)
	}
	// The same Redis process again: no jump.
	if b := createBuildOf(t, fresh, "d"); b.ID != 1+IDGap+2 || len(jumps) != 1 {
		t.Fatalf("id %d, jumps %+v: the same Redis process never jumps", b.ID, jumps)
	}
}

func TestAnAttemptTokenNeverRepeatsAfterRedisLostWrites(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	b := newBuild(t, r)
	seen := map[int64]bool{}
	var last int64
	for i := range 3 {
		_, _, a, err := r.BeginAttempt(ctx, b.ID, i+1, "A")
		if err != nil {
			t.Fatal(err)
		}
		if a.Token <= last || seen[a.Token] {
			t.Fatalf("token %d after %d", a.Token, last)
		}
		seen[a.Token], last = true, a.Token
	}
	// The attempt hash lost (a write lost, or the whole key): the next
	// token is still new.
	r.rdb.Del(ctx, keyAttempt(b.ID))
	_, _, a, err := r.BeginAttempt(ctx, b.ID, 4, "B")
	if err != nil {
		t.Fatal(err)
	}
	if seen[a.Token] || a.Token <= last {
		t.Fatalf("token %d after the loss; tokens before: %v", a.Token, seen)
	}
	// Tokens are exact integers as Redis stores them (no float formatting).
	if got, _ := r.rdb.HGet(ctx, keyAttempt(b.ID), "token").Result(); got != fmt.Sprint(a.Token) {
		t.Fatalf("stored token %q, attempt token %d", got, a.Token)
	}
	if err := r.ConfirmAttempt(ctx, a, "", ""); err != nil {
		t.Fatalf("the new attempt is current: %v", err)
	}
}
