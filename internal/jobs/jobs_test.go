package jobs

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
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
	// asynq archives a task whose retries reached MaxRetry before it asks
	// IsFailure: a task keeps one spare, so a last attempt can go back too.
	if spareRetry(3) != 3 || spareRetry(1) != 1 || spareRetry(0) != 1 {
		t.Errorf("spareRetry(3, 1, 0) = %d, %d, %d; want 3, 1, 1", spareRetry(3), spareRetry(1), spareRetry(0))
	}
}
