package pipeline

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/fence"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

func TestANamespaceLimitRefusalIsNoFailureAndComesBackSoon(t *testing.T) {
	t.Parallel()
	refused := fmt.Errorf("R CMD build: %w", fmt.Errorf("sandbox: clone: %w", sandbox.ErrNamespaceLimit))
	failed := errors.New("R CMD build exited with status 1")
	if IsFailure(refused) || !IsFailure(failed) {
		t.Fatalf("IsFailure(refused) = %v, IsFailure(failed) = %v; want false, true", IsFailure(refused), IsFailure(failed))
	}
	backoff := func(n int) time.Duration { return time.Minute << n }
	if d := RetryDelay(3, refused, backoff); d != 5*time.Second {
		t.Errorf("refused build waits %s, want 5s", d)
	}
	if d := RetryDelay(3, failed, backoff); d != 8*time.Minute {
		t.Errorf("failed build waits %s, want the worker's backoff (8m)", d)
	}
}

func TestParkedAndFencedAttemptsSpendNoAttempt(t *testing.T) {
	t.Parallel()
	parked := &parkedError{recheck: time.Minute}
	for name, err := range map[string]error{
		"parked":     parked,
		"fenced":     &fence.StoppedError{Reason: fence.ReasonFenced, Err: errors.New("i/o timeout")},
		"superseded": &registry.SupersededError{Current: registry.Attempt{Token: 2}},
	} {
		if IsFailure(err) {
			t.Errorf("IsFailure(%s) = true: it would spend an attempt", name)
		}
	}
	if d := RetryDelay(0, parked, func(int) time.Duration { return time.Second }); d != time.Minute {
		t.Errorf("a parked build comes back after %s, want its recheck (1m)", d)
	}
}
