package pipeline

import (
	"errors"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/fence"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// IsFailure is the worker's asynq.Config.IsFailure. None of these is a
// verdict on the build, so asynq retries them without counting a retry: a
// build that could not start because the user-namespace limit was reached
// (namespaces are freed lazily, or another process on the node held
// them), a parked build (no free slot), and an attempt stopped because
// its worker lost hold of it.
func IsFailure(err error) bool {
	var parked *parkedError
	var lost *fence.StoppedError
	return !backInLine(err) && !errors.As(err, &parked) && !errors.As(err, &lost) && !errors.Is(err, registry.ErrSuperseded)
}

// backInLine reports whether err sends a build back in line without
// spending an attempt.
func backInLine(err error) bool { return errors.Is(err, sandbox.ErrNamespaceLimit) }

// RetryDelay is how long a build that failed with err waits before it is
// tried again, given the worker's delay for failed attempt n: a build
// back in line for a user namespace tries again within seconds, as other
// builds end and the kernel frees theirs.
func RetryDelay(n int, err error, failed func(n int) time.Duration) time.Duration {
	if backInLine(err) {
		return min(failed(0), 5*time.Second)
	}
	var parked *parkedError
	if errors.As(err, &parked) {
		return parked.recheck
	}
	return failed(n)
}
