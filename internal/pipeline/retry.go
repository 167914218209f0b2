package pipeline

import (
	"errors"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// IsFailure is the worker's asynq.Config.IsFailure: a build that could not
// start because the user-namespace limit was reached is no verdict on the
// build (namespaces are freed lazily, or another process on the node held
// them), so asynq retries it without counting a retry.
func IsFailure(err error) bool { return !backInLine(err) }

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
	return failed(n)
}
