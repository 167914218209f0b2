package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
)

// CancelChannel is the pub/sub channel on which the API announces a
// canceled build (payload: the build id), so the worker running it stops
// at once. Workers also re-read a running build's status every
// Handler.CancelCheck, in case the message was lost.
const CancelChannel = "pkgfleet:cancel"

// SlotLimit is how many builds of b may run at once across the fleet:
// Git.BuildConcurrency for a tag builder, one for a commit builder.
func SlotLimit(b *registry.Builder, buildConcurrency int) int {
	if b.BuildTrigger == registry.TriggerTags {
		return max(buildConcurrency, 1)
	}
	return 1
}

// SlotKey is the semaphore key of a builder's build slots.
func SlotKey(source, builder string) string { return source + "/" + builder }

// errCanceled is the cause of a build context ended by a user's cancel.
var errCanceled = errors.New("build canceled")

// acquire waits for a build slot of b's builder, showing the build as
// waiting meanwhile. It returns a nil lease when the handler has no
// semaphore. errSkip means the build was canceled or finished meanwhile.
func (h *Handler) acquire(ctx context.Context, b *registry.Build, bl *registry.Builder, attempt int) (*semaphore.Lease, error) {
	if h.Slots == nil {
		return nil, nil
	}
	limit := SlotLimit(bl, h.BuildConcurrency)
	waitCtx, cancel := context.WithTimeout(ctx, h.maxSlotWait())
	defer cancel()
	// A worker that is stopping takes no new slot: its waiters leave the
	// queue (keeping no one else from a slot) and are requeued by asynq
	// when the grace period ends; they come back at the same place, as
	// the queue is ordered by build id.
	stopped := make(chan struct{})
	go func() {
		select {
		case <-h.Stopping:
			close(stopped)
			cancel()
		case <-waitCtx.Done():
		}
	}()
	lease, err := h.Slots.Acquire(waitCtx, SlotKey(b.Source, b.Builder), limit, strconv.FormatInt(b.ID, 10), b.ID,
		func(w semaphore.Wait) {
			_, uerr := h.Registry.UpdateBuild(ctx, b.ID, func(b *registry.Build) error {
				if registry.Terminal(b.Status) {
					return errSkip
				}
				b.Status, b.Attempts, b.Worker = registry.StatusWaiting, attempt, h.Worker
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
		_, _ = h.Registry.UpdateBuild(context.WithoutCancel(ctx), b.ID, func(b *registry.Build) error {
			if registry.Terminal(b.Status) {
				return errSkip
			}
			b.Status, b.Detail = registry.StatusQueued, "worker "+h.Worker+" is stopping; requeued"
			return nil
		})
		<-ctx.Done() // asynq requeues the task when the grace period ends
		return nil, ctx.Err()
	default:
	}
	if ctx.Err() != nil {
		return nil, err
	}
	if cur, gerr := h.Registry.Build(context.WithoutCancel(ctx), b.ID); gerr == nil && registry.Terminal(cur.Status) {
		return nil, errSkip
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("waited longer than Git.MaxSlotWait (%s) for a build slot", h.maxSlotWait())
	}
	return nil, err
}

func (h *Handler) maxSlotWait() time.Duration {
	if h.MaxSlotWait > 0 {
		return h.MaxSlotWait
	}
	return 24 * time.Hour
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
func (h *Handler) watchCancel(ctx context.Context, id int64, cancel context.CancelCauseFunc) (setLease func(*semaphore.Lease), stop func()) {
	canceled, unlisten := h.Events.Listen(CancelChannel, strconv.FormatInt(id, 10))
	every := h.CancelCheck
	if every <= 0 {
		every = 15 * time.Second
	}
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
				if b, err := h.Registry.Build(ctx, id); err == nil && b.Status == registry.StatusCanceled {
					cancel(errCanceled)
					return
				}
			case <-t.C:
				if b, err := h.Registry.Build(ctx, id); err == nil && b.Status == registry.StatusCanceled {
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

// Running is the number of builds this handler is running right now (not
// counting those waiting for a slot).
func (h *Handler) Running() int { return int(h.running.Load()) }

// Wait waits up to timeout for the handler's tasks to return, so that a
// stopping worker releases their slots before it closes Redis.
func (h *Handler) Wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { h.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// RunTimeout bounds one build attempt once it has its slot: the build
// itself (Git.BuildTimeout) plus room for the clone and the upload.
func RunTimeout(cfg *config.Config) time.Duration { return cfg.Git.BuildTimeout + 15*time.Minute }

// TaskTimeout is the asynq timeout of a build task: a wait for a slot
// (Git.MaxSlotWait) and one attempt. asynq would otherwise cancel a long
// wait at its 30-minute default.
func TaskTimeout(cfg *config.Config) time.Duration { return cfg.Git.MaxSlotWait + RunTimeout(cfg) }
