package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
)

// errCanceled is the cause of a build context ended by a user's cancel.
var errCanceled = errors.New("build canceled")

// acquire waits for a build slot of b's builder, showing the build as
// waiting meanwhile. errSkip means the build was canceled or finished meanwhile.
func (p *Pipeline) acquire(ctx context.Context, b *registry.Build, bl *registry.Builder, attempt int) (*semaphore.Lease, error) {
	limit := queue.SlotLimit(bl, p.buildConcurrency)
	waitCtx, cancel := context.WithTimeout(ctx, p.maxSlotWait)
	defer cancel()
	// A worker that is stopping takes no new slot: its waiters leave the
	// queue (keeping no one else from a slot) and are requeued by asynq
	// when the grace period ends; they come back at the same place, as
	// the queue is ordered by build id.
	stopped := make(chan struct{})
	go func() {
		select {
		case <-p.stopping:
			close(stopped)
			cancel()
		case <-waitCtx.Done():
		}
	}()
	lease, err := p.slots.Acquire(waitCtx, queue.SlotKey(b.Source, b.Builder), limit, strconv.FormatInt(b.ID, 10), b.ID,
		func(w semaphore.Wait) {
			_, uerr := p.registry.UpdateBuild(ctx, b.ID, func(b *registry.Build) error {
				if registry.Terminal(b.Status) {
					return errSkip
				}
				b.Status, b.Attempts, b.Worker = registry.StatusWaiting, attempt, p.worker
				b.Detail = fmt.Sprintf("waiting for a build slot (%d of %d in use; %s in line)", w.InUse, w.Limit, ordinal(w.Position))
				return nil
			})
			if errors.Is(uerr, errSkip) {
				cancel() // canceled while waiting
			}
		})
	if err == nil {
		return lease, nil
	}
	select {
	case <-stopped:
		_, _ = p.registry.UpdateBuild(context.WithoutCancel(ctx), b.ID, func(b *registry.Build) error {
			if registry.Terminal(b.Status) {
				return errSkip
			}
			b.Status, b.Detail = registry.StatusQueued, "worker "+p.worker+" is stopping; requeued"
			return nil
		})
		<-ctx.Done() // asynq requeues the task when the grace period ends
		return nil, ctx.Err()
	default:
	}
	if ctx.Err() != nil {
		return nil, err
	}
	if cur, gerr := p.registry.Build(context.WithoutCancel(ctx), b.ID); gerr == nil && registry.Terminal(cur.Status) {
		return nil, errSkip
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("waited longer than Git.MaxSlotWait (%s) for a build slot", p.maxSlotWait)
	}
	return nil, err
}

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

// watchCancel cancels the build's context with errCanceled when the build
// is canceled (pub/sub, or a status check every CancelCheck) and with
// semaphore.ErrLost when its slot lease is lost. It returns a stop func.
func (p *Pipeline) watchCancel(ctx context.Context, id int64, cancel context.CancelCauseFunc) (setLease func(*semaphore.Lease), stop func()) {
	canceled, unlisten := p.events.Listen(queue.CancelChannel, strconv.FormatInt(id, 10))
	every := p.cancelCheck
	leases := make(chan *semaphore.Lease, 1)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		var lost <-chan struct{}
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case l := <-leases:
				lost = l.Lost()
			case <-lost:
				cancel(semaphore.ErrLost)
				return
			case <-canceled:
				// Pub/sub is shared by all databases of a Redis server:
				// believe the registry, not the message.
				if b, err := p.registry.Build(ctx, id); err == nil && b.Status == registry.StatusCanceled {
					cancel(errCanceled)
					return
				}
			case <-t.C:
				if b, err := p.registry.Build(ctx, id); err == nil && b.Status == registry.StatusCanceled {
					cancel(errCanceled)
					return
				}
			}
		}
	}()
	return func(l *semaphore.Lease) {
			if l != nil {
				leases <- l
			}
		}, func() {
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
