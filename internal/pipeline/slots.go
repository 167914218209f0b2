package pipeline

import (
	"context"
	"strconv"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return strconv.Itoa(n) + suffix
}

// watchCancel cancels the build's context with errCanceled as soon as a
// cancel is announced (pub/sub); the build's hold re-reads the status too,
// in case the message was lost. It returns a stop func.
func (p *Pipeline) watchCancel(ctx context.Context, id int64, cancel context.CancelCauseFunc) (stop func()) {
	canceled, unlisten := p.events.Listen(queue.CancelChannel, strconv.FormatInt(id, 10))
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-canceled:
				// Pub/sub is shared by all databases of a Redis server:
				// believe the registry, not the message.
				b, err := p.registry.Build(ctx, id)
				if err == nil && b.Status == registry.StatusCanceled {
					cancel(errCanceled)
					return
				}
				if err != nil {
					p.log.Warn("could not read a build announced as canceled; its hold checks again", "build", id, "error", err)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		unlisten()
	}
}

// Running is the number of builds this pipeline is running right now (not
// counting those waiting for a slot).
func (p *Pipeline) Running() int { return int(p.running.Load()) }

// Wait waits up to timeout for the pipeline's tasks to return, so that a
// stopping worker releases their slots before it closes Redis.
func (p *Pipeline) Wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { p.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}
