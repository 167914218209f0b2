package fence

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// run starts a Hold and returns the build's context.
func run(t *testing.T, h *Hold) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	end := h.Run(cancel)
	t.Cleanup(func() { end(); cancel(nil) })
	return ctx
}

func TestAHungConfirmationStopsTheBuildOnTheLocalClock(t *testing.T) {
	t.Parallel()
	var calls, returned atomic.Int32
	release := make(chan struct{})
	defer close(release)
	ctx := run(t, &Hold{After: 400 * time.Millisecond, Confirm: func(ctx context.Context) error {
		if calls.Add(1) == 1 {
			return nil
		}
		<-release // a connection that hangs and ignores its deadline
		returned.Add(1)
		return nil
	}})
	<-ctx.Done()
	var se *StoppedError
	if !errors.As(context.Cause(ctx), &se) || se.Reason != ReasonFenced {
		t.Fatalf("cause %v, want a fenced StoppedError", context.Cause(ctx))
	}
	if returned.Load() != 0 {
		t.Fatal("the build was stopped only after the hung call returned")
	}
	if se.Unconfirmed <= 400*time.Millisecond || !strings.Contains(se.Error(), "hold unconfirmed for") || !strings.Contains(se.Error(), "Redis unreachable from this worker") {
		t.Fatalf("message %q (unconfirmed %s)", se, se.Unconfirmed)
	}
}

func TestFailingConfirmationsStopTheBuildAfterT(t *testing.T) {
	t.Parallel()
	refused := errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	var calls atomic.Int32
	ctx := run(t, &Hold{After: 400 * time.Millisecond, Confirm: func(context.Context) error {
		calls.Add(1)
		return refused
	}})
	<-ctx.Done()
	var se *StoppedError
	if !errors.As(context.Cause(ctx), &se) || !errors.Is(se, refused) || calls.Load() < 2 {
		t.Fatalf("cause %v after %d calls, want the refusal after a few", context.Cause(ctx), calls.Load())
	}
	t.Log(se)
}

func TestASupersededAttemptStopsAtOnceAndSaysByWhom(t *testing.T) {
	t.Parallel()
	sup := &registry.SupersededError{Stale: registry.Attempt{Build: 1, Token: 1}, Current: registry.Attempt{Build: 1, Token: 3, Number: 2, Worker: "B"}}
	ctx := run(t, &Hold{After: 2 * time.Second, Confirm: func(context.Context) error { return sup }})
	<-ctx.Done()
	var se *StoppedError
	if !errors.As(context.Cause(ctx), &se) || se.Reason != ReasonSuperseded || se.Error() != "superseded by attempt 2 (token 3) on worker B" {
		t.Fatalf("cause %v", context.Cause(ctx))
	}
}

func TestAConfirmedHoldKeepsTheBuildRunning(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	ctx := run(t, &Hold{After: 200 * time.Millisecond, Confirm: func(context.Context) error { calls.Add(1); return nil }})
	// Many periods of T pass: the build must still run.
	testenv.Eventually(t, 30*time.Second, "twenty confirmations", func() bool { return calls.Load() >= 20 })
	if ctx.Err() != nil {
		t.Fatalf("a confirmed hold stopped its build: %v", context.Cause(ctx))
	}
}
