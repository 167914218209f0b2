// Package fence stops a build whose worker can no longer confirm that the
// build is still its own. A build runs under a Hold: every After/4 the
// worker confirms its hold (its attempt is the build's current one, its
// task is still leased to it, its build slot renewed); when no
// confirmation has succeeded for After, by the worker's own monotonic
// clock, the Hold stops the build. Deciding that needs no Redis call, so a
// worker cut off from Redis, or whose connection hangs, stops its builds
// in time: After is well below the leases that let another worker take
// the build over.
//
// It does not know what a confirmation is (the pipeline passes it) and
// does not kill processes (cancelling the build's context does).
package fence

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/lease"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
)

// DefaultAfter is T by default (lease.DefaultFence, 20s).
const DefaultAfter = lease.DefaultFence

// Why a build was stopped, as the metric pkgfleet_builds_fenced_total
// names it.
const (
	ReasonFenced     = "fenced"     // its worker could not confirm its hold in time
	ReasonSuperseded = "superseded" // a newer attempt of the build took over
)

// StoppedError is the cause of a build context a Hold ended.
type StoppedError struct {
	Reason      string
	Unconfirmed time.Duration // how long the hold had gone unconfirmed
	Err         error         // what the last confirmation said
}

func (e *StoppedError) Error() string {
	if e.Reason == ReasonSuperseded {
		return e.Err.Error()
	}
	return fmt.Sprintf("hold unconfirmed for %s: %s", e.Unconfirmed.Round(100*time.Millisecond), explain(e.Err))
}

func (e *StoppedError) Unwrap() error { return e.Err }

// explain says, in words, what kept the hold unconfirmed.
func explain(err error) string {
	switch {
	case err == nil:
		return "no confirmation returned in time: Redis unreachable from this worker"
	case errors.Is(err, semaphore.ErrLost):
		return "the build slot's lease ran out before this worker renewed it"
	case errors.Is(err, registry.ErrTaskLeaseLost):
		return "the queue no longer leases the task to this worker"
	}
	return "Redis unreachable from this worker (" + err.Error() + ")"
}

// final reports whether a confirmation's error ends the hold at once.
func final(err error) bool {
	return errors.Is(err, registry.ErrSuperseded) || errors.Is(err, semaphore.ErrLost) || errors.Is(err, registry.ErrTaskLeaseLost)
}

// Hold keeps confirming one build's hold while the build runs.
type Hold struct {
	After   time.Duration // T; 0 means DefaultAfter
	Confirm func(ctx context.Context) error
}

func (h *Hold) after() time.Duration {
	if h.After > 0 {
		return h.After
	}
	return DefaultAfter
}

// Run confirms the hold every After/4 until the returned func is called,
// and calls stop with a *StoppedError when the hold is lost: at once when
// a confirmation says it is (superseded, slot or task lease gone), or when
// none has succeeded for After, even while a confirmation still hangs.
// The hold counts as confirmed when Run starts.
func (h *Hold) Run(stop context.CancelCauseFunc) (end func()) {
	after := h.after()
	every := after / 4
	var (
		mu      sync.Mutex
		lastOK  = time.Now() // carries the monotonic clock
		lastErr error
	)
	quit := make(chan struct{})
	go func() { // confirmer
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			sent := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), every)
			err := h.Confirm(ctx)
			cancel()
			mu.Lock()
			if err == nil {
				lastOK, lastErr = sent, nil
			} else {
				lastErr = err
			}
			unconfirmed := time.Since(lastOK)
			mu.Unlock()
			if err != nil && final(err) {
				reason := ReasonFenced
				if errors.Is(err, registry.ErrSuperseded) {
					reason = ReasonSuperseded
				}
				stop(&StoppedError{Reason: reason, Unconfirmed: unconfirmed, Err: err})
				return
			}
		}
	}()
	go func() { // watchdog: decides on the local clock alone
		t := time.NewTicker(max(every/4, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			mu.Lock()
			unconfirmed, err := time.Since(lastOK), lastErr
			mu.Unlock()
			if unconfirmed > after {
				stop(&StoppedError{Reason: ReasonFenced, Unconfirmed: unconfirmed, Err: err})
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		// The confirmer may hang in a call until its timeout; the build
		// need not wait for it.
	}
}
