package pipeline

import (
	"errors"
	"fmt"
	"testing"
	"time"

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
