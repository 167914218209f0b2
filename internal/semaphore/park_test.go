package semaphore

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func TestParkedWaitersKeepTheirPlaceAndNextNamesTheHead(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t, 1, nil)[0].sema, context.Background()
	const key, park = "src/commits", time.Minute
	first, _, err := s.TryAcquire(ctx, key, 1, "1", "1:1", 1, park)
	if err != nil || first == nil {
		t.Fatalf("first build: %v %v", first, err)
	}
	// Two builds park, the newer one first: the line is by build id.
	for _, id := range []string{"3", "2"} {
		l, w, err := s.TryAcquire(ctx, key, 1, id, id+":1", int64(id[0]-'0'), park)
		if err != nil || l != nil {
			t.Fatalf("build %s got a slot that is held: %v", id, err)
		}
		t.Logf("build %s parked: %+v", id, w)
	}
	if _, w, _ := s.TryAcquire(ctx, key, 1, "3", "3:2", 3, park); w.Position != 2 {
		t.Fatalf("build 3 is %d in line, want 2nd", w.Position)
	}
	if keys, _ := s.WaitingKeys(ctx); !slices.Contains(keys, key) {
		t.Fatalf("the sweep's keys %v lack %s", keys, key)
	}
	if next, _ := s.Next(ctx, key, 1); len(next) != 0 {
		t.Fatalf("Next = %v while the slot is held", next)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	next, err := s.Next(ctx, key, 1)
	if err != nil || !slices.Equal(next, []string{"2"}) {
		t.Fatalf("Next after the release = %v %v, want [2]", next, err)
	}
	// Build 3 comes back first (its task was quicker) but may not jump
	// the line.
	if l, _, _ := s.TryAcquire(ctx, key, 1, "3", "3:3", 3, park); l != nil {
		t.Fatal("build 3 took the slot before build 2, which is ahead of it")
	}
	two, _, _ := s.TryAcquire(ctx, key, 1, "2", "2:2", 2, park)
	if two == nil {
		t.Fatal("build 2 did not get the free slot")
	}
	two.Release(ctx)
	three, _, _ := s.TryAcquire(ctx, key, 1, "3", "3:4", 3, park)
	if three == nil {
		t.Fatal("build 3 did not get the slot after build 2")
	}
	three.Release(ctx)
	if _, err := s.Next(ctx, key, 1); err != nil {
		t.Fatal(err)
	}
	if keys, _ := s.WaitingKeys(ctx); slices.Contains(keys, key) {
		t.Fatalf("an empty line stays in the sweep's keys: %v", keys)
	}
}

func TestALaterAttemptDoesNotAdoptAnEarlierAttemptsSlot(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t, 1, nil)[0].sema, context.Background()
	old, _, _ := s.TryAcquire(ctx, "k", 1, "7", "7:1", 7, time.Minute)
	if old == nil {
		t.Fatal("no slot")
	}
	// The build is delivered again (its first worker was cut off): the
	// new attempt waits while the old one may still run.
	if l, w, _ := s.TryAcquire(ctx, "k", 1, "7", "7:2", 7, time.Minute); l != nil || w.Position != 1 {
		t.Fatalf("attempt 2 adopted attempt 1's slot (lease %v, wait %+v)", l, w)
	}
	old.Release(ctx)
	if l, _, _ := s.TryAcquire(ctx, "k", 1, "7", "7:2", 7, time.Minute); l == nil {
		t.Fatal("attempt 2 did not get the slot attempt 1 released")
	}
}

func TestAnUnrenewedLeaseIsLostAndAParkedPlaceLapses(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t, 1, func(s *Semaphore) { s.HoldLease = 300 * time.Millisecond })[0].sema, context.Background()
	l, _, _ := s.TryAcquire(ctx, "k", 1, "1", "1:1", 1, time.Minute)
	if err := l.Renew(ctx); err != nil {
		t.Fatalf("renew within the lease: %v", err)
	}
	if _, _, err := s.TryAcquire(ctx, "k", 1, "2", "2:1", 2, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the lease to run out", func() bool {
		h, _ := s.Holders(ctx, "k")
		return len(h) == 0
	})
	if err := l.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("renew after the lease ran out: %v, want ErrLost", err)
	}
	// Build 2's place lapsed too (nobody came back for it): build 3 is
	// first in line.
	testenv.Eventually(t, 10*time.Second, "build 2's place to lapse", func() bool {
		next, _ := s.Next(ctx, "k", 1)
		return len(next) == 0
	})
	if l3, _, _ := s.TryAcquire(ctx, "k", 1, "3", "3:1", 3, time.Minute); l3 == nil {
		t.Fatal("build 3 is kept out by a lapsed place")
	}
}

func TestAJoinedWaiterKeepsANewerOneFromJumpingAhead(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t, 1, nil)[0].sema, context.Background()
	if err := s.Join(ctx, "k", "1", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Build 2 reaches a worker first: the slot is free, but build 1 is
	// ahead of it in line.
	if l, w, _ := s.TryAcquire(ctx, "k", 1, "2", "2:1", 2, time.Minute); l != nil || w.Position != 2 {
		t.Fatalf("build 2 jumped the line (lease %v, wait %+v)", l, w)
	}
	if next, _ := s.Next(ctx, "k", 1); !slices.Equal(next, []string{"1"}) {
		t.Fatalf("Next = %v, want [1]", next)
	}
	if l, _, _ := s.TryAcquire(ctx, "k", 1, "1", "1:1", 1, time.Minute); l == nil {
		t.Fatal("build 1 did not get the slot it was first in line for")
	}
}
