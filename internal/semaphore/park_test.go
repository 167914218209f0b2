package semaphore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func TestParkedWaitersKeepTheirPlaceAndNextNamesTheHead(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t, 1, nil)[0].sema, context.Background()
	const key, park = "src/commits", time.Minute
	first, _, err := s.TryAcquire(ctx, key, 1, parked("1", "1:1", 1, park))
	if err != nil || first == nil {
		t.Fatalf("first build: %v %v", first, err)
	}
	// Two builds park, the newer one first: the line is by build id.
	for _, id := range []string{"3", "2"} {
		l, w, err := s.TryAcquire(ctx, key, 1, parked(id, id+":1", int64(id[0]-'0'), park))
		if err != nil || l != nil {
			t.Fatalf("build %s got a slot that is held: %v", id, err)
		}
		t.Logf("build %s parked: %+v", id, w)
	}
	if _, w, _ := s.TryAcquire(ctx, key, 1, parked("3", "3:2", 3, park)); w.Position != 2 {
		t.Fatalf("build 3 is %d in line, want 2nd", w.Position)
	}
	if keys, _ := s.WaitingKeys(ctx); !slices.Contains(keys, key) {
		t.Fatalf("the sweep's keys %v lack %s", keys, key)
	}
	if next, _ := s.Next(ctx, key, 1); len(next) != 0 {
		t.Fatalf("Next = %v while the slot is held", next)
	}
	// The release names the head of the line, parked, with its wake
	// address; so does a sweep's Next until build 2 asks again.
	woken, err := first.Release(ctx)
	if want := []Woken{{"2", "wake 2"}}; err != nil || !slices.Equal(woken, want) {
		t.Fatalf("Release = %v %v, want %v", woken, err, want)
	}
	if next, err := s.Next(ctx, key, 1); err != nil || !slices.Equal(next, woken) {
		t.Fatalf("Next after the release = %v %v, want %v", next, err, woken)
	}
	// Build 3 comes back first (its task was quicker) but may not jump
	// the line.
	if l, _, _ := s.TryAcquire(ctx, key, 1, parked("3", "3:3", 3, park)); l != nil {
		t.Fatal("build 3 took the slot before build 2, which is ahead of it")
	}
	two, _, _ := s.TryAcquire(ctx, key, 1, parked("2", "2:2", 2, park))
	if two == nil {
		t.Fatal("build 2 did not get the free slot")
	}
	two.Release(ctx)
	three, _, _ := s.TryAcquire(ctx, key, 1, parked("3", "3:4", 3, park))
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
	old, _, _ := s.TryAcquire(ctx, "k", 1, parked("7", "7:1", 7, time.Minute))
	if old == nil {
		t.Fatal("no slot")
	}
	// The build is delivered again (its first worker was cut off): the
	// new attempt waits while the old one may still run.
	if l, w, _ := s.TryAcquire(ctx, "k", 1, parked("7", "7:2", 7, time.Minute)); l != nil || w.Position != 1 {
		t.Fatalf("attempt 2 adopted attempt 1's slot (lease %v, wait %+v)", l, w)
	}
	old.Release(ctx)
	if l, _, _ := s.TryAcquire(ctx, "k", 1, parked("7", "7:2", 7, time.Minute)); l == nil {
		t.Fatal("attempt 2 did not get the slot attempt 1 released")
	}
}

func TestAnUnrenewedLeaseIsLostAndAParkedPlaceLapses(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t, 1, func(p *process) { p.sema.HoldLease = 300 * time.Millisecond })[0].sema, context.Background()
	l, _, _ := s.TryAcquire(ctx, "k", 1, parked("1", "1:1", 1, time.Minute))
	if err := l.Renew(ctx); err != nil {
		t.Fatalf("renew within the lease: %v", err)
	}
	if _, _, err := s.TryAcquire(ctx, "k", 1, parked("2", "2:1", 2, 300*time.Millisecond)); err != nil {
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
	if l3, _, _ := s.TryAcquire(ctx, "k", 1, parked("3", "3:1", 3, time.Minute)); l3 == nil {
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
	if l, w, _ := s.TryAcquire(ctx, "k", 1, parked("2", "2:1", 2, time.Minute)); l != nil || w.Position != 2 {
		t.Fatalf("build 2 jumped the line (lease %v, wait %+v)", l, w)
	}
	// Build 1 has not asked yet (its task is on its way): nobody to wake.
	if next, _ := s.Next(ctx, "k", 1); len(next) != 0 {
		t.Fatalf("Next = %v, want none", next)
	}
	if l, _, _ := s.TryAcquire(ctx, "k", 1, parked("1", "1:1", 1, time.Minute)); l == nil {
		t.Fatal("build 1 did not get the slot it was first in line for")
	}
}

// parked is an Ask of a build that parks when refused; its wake address
// names it.
func parked(waiter, holder string, order int64, placeFor time.Duration) Ask {
	return Ask{Waiter: waiter, Holder: holder, Order: order, PlaceFor: placeFor, WakeBy: "wake " + waiter}
}

func TestAReleaseWakesOnlyTheWaitersThatAsked(t *testing.T) {
	t.Parallel()
	p := setup(t, 1, nil)[0]
	s, ctx := p.sema, context.Background()
	const limit = 3
	var holders []*Lease
	for i := range limit {
		l, _, err := s.TryAcquire(ctx, "k", limit, parked(fmt.Sprint("h", i), fmt.Sprint("h", i, ":1"), int64(i), time.Minute))
		if err != nil || l == nil {
			t.Fatalf("holder %d: %v %v", i, l, err)
		}
		holders = append(holders, l)
	}
	// A long line of queued builds that have not reached a worker yet,
	// then one that parked and one that listens in its process, behind
	// them but among the first free ones once two slots are free.
	for i := 10; i < 210; i++ {
		if err := s.Join(ctx, "k", fmt.Sprint(i), int64(i), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.TryAcquire(ctx, "k", limit, parked("3", "3:1", 3, time.Minute)); err != nil {
		t.Fatal(err)
	}
	listening := Ask{Waiter: "4", Holder: "4:1", Order: 4, PlaceFor: time.Minute}
	if _, _, err := s.TryAcquire(ctx, "k", limit, listening); err != nil {
		t.Fatal(err)
	}
	heard, stop := p.hub.Listen(WakeChannel, "4")
	defer stop()
	if err := releaseScript.Load(ctx, p.rdb).Err(); err != nil {
		t.Fatal(err)
	}
	p.cmds.Reset()
	woken, err := holders[0].Release(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Woken{{"3", "wake 3"}}; !slices.Equal(woken, want) {
		t.Fatalf("first release woke %v, want %v", woken, want)
	}
	if n, by := p.cmds.Total(); n != 1 {
		t.Fatalf("a release sent %d commands (%v), want one script", n, by)
	}
	// The second free slot reaches the listener, by pub/sub.
	if woken, _ = holders[1].Release(ctx); !slices.Equal(woken, []Woken{{"3", "wake 3"}}) {
		t.Fatalf("second release woke %v, want the parked build again (it has not come back)", woken)
	}
	select {
	case <-heard:
	case <-time.After(10 * time.Second):
		t.Fatal("the listening waiter heard nothing")
	}
	// The queued builds behind them were never named.
	if next, _ := s.Next(ctx, "k", limit); len(next) != 1 || next[0].Waiter != "3" {
		t.Fatalf("Next = %v, want only the parked build", next)
	}
}
