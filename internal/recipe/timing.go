package recipe

import (
	"io"
	"sync"
	"time"
)

// Timing splits a recipe's run into the phases a build record shows.
type Timing struct {
	// SandboxStart is from the runner's start until the tool's first
	// output: setting up the sandbox and starting the interpreter.
	SandboxStart time.Duration
	// Build is the rest of the runner's run: the build tool itself.
	Build time.Duration
	// Checks is the check of the results against the package's metadata.
	Checks time.Duration
	// Check is the check stage's own sandboxed run (check.go), whole.
	Check time.Duration
}

// stopwatch times one runner call and the checks after it; the first
// write through it marks the tool's start.
type stopwatch struct {
	w     io.Writer
	start time.Time

	mu    sync.Mutex
	first time.Time
	ran   time.Time
}

func startStopwatch(w io.Writer) *stopwatch { return &stopwatch{w: w, start: time.Now()} }

func (s *stopwatch) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.first.IsZero() {
		s.first = time.Now()
	}
	s.mu.Unlock()
	return s.w.Write(p)
}

// stopped marks the runner's return.
func (s *stopwatch) stopped() { s.ran = time.Now() }

// timing is the split once the checks are done. A tool that wrote
// nothing counts wholly as build.
func (s *stopwatch) timing() Timing {
	s.mu.Lock()
	first := s.first
	s.mu.Unlock()
	if first.IsZero() || first.After(s.ran) {
		first = s.start
	}
	return Timing{SandboxStart: first.Sub(s.start), Build: s.ran.Sub(first), Checks: time.Since(s.ran)}
}
