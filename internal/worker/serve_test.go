package worker

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestGateHoldsBuildsToTheSlotsAndFollowsALimitChange(t *testing.T) {
	t.Parallel()
	var g gate
	g.setLimit(1)
	if err := g.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A second build waits while the only slot is held.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := g.acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second acquire with one slot: %v, want it to wait until its context ends", err)
	}
	// It gets a slot when the limit grows, and another when one is freed.
	got := make(chan error, 2)
	go func() { got <- g.acquire(context.Background()) }()
	go func() { got <- g.acquire(context.Background()) }()
	g.setLimit(2)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	g.release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	held := g.held
	g.mu.Unlock()
	if held != 2 {
		t.Fatalf("held = %d, want 2", held)
	}
}
