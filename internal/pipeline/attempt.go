package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/fence"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
)

// An attempt's life on a worker, as docs/fleet.md describes it: it takes
// a token (registry.BeginAttempt), takes its builder's slot or parks,
// builds under a fence.Hold, and writes everything through write, which
// the registry refuses once a newer attempt took over.

// errCanceled is the cause of a build context ended by a user's cancel.
var errCanceled = errors.New("build canceled")

// parkedError sends a build that found no free slot back to asynq's retry
// set, without spending an attempt (IsFailure says no), until a release
// or a sweep wakes it, or recheck passes.
type parkedError struct {
	recheck time.Duration
	wait    semaphore.Wait
}

func (e *parkedError) Error() string {
	return fmt.Sprintf("parked: no free build slot (%d of %d in use; %s in line)", e.wait.InUse, e.wait.Limit, ordinal(e.wait.Position))
}

// acquire takes a build slot of b's builder for attempt at, or parks the
// build: it keeps its place in line and gives its asynq worker slot back
// (a *parkedError). canPark is false when asynq has no retry left to park
// on (it archives such a task): the build then waits here. errSkip means
// the build was canceled or finished meanwhile.
func (p *Pipeline) acquire(ctx context.Context, log *slog.Logger, at registry.Attempt, b *registry.Build, bl *registry.Builder, canPark bool) (*semaphore.Lease, error) {
	key, limit := queue.SlotKey(b.Source, b.Builder), queue.SlotLimit(bl, p.slots.BuildConcurrency)
	waiter, holder := strconv.FormatInt(b.ID, 10), holderToken(at)
	woken, stop := p.events.Listen(semaphore.WakeChannel, waiter)
	defer stop()
	for {
		ask := semaphore.Ask{Waiter: waiter, Holder: holder, Order: b.ID, PlaceFor: p.parkFor()}
		if canPark {
			ask.WakeBy = queue.WakeBy(b)
		}
		lease, w, err := p.slots.Sema.TryAcquire(ctx, key, limit, ask)
		if err != nil || lease != nil {
			return lease, err
		}
		rec, err := p.write(ctx, log, at, func(b *registry.Build) error {
			if registry.Terminal(b.Status) {
				return errSkip
			}
			if b.WaitingSince == nil {
				now := time.Now().UTC()
				b.WaitingSince = &now
			}
			b.Status, b.Worker = registry.StatusWaiting, ""
			b.Detail = fmt.Sprintf("waiting for a build slot (%d of %d in use; %s in line)", w.InUse, w.Limit, ordinal(w.Position))
			return nil
		})
		if err != nil {
			if errors.Is(err, errSkip) {
				p.leave(ctx, log, b, limit)
			}
			return nil, err
		}
		if time.Since(*rec.WaitingSince) > p.maxSlotWait {
			p.leave(ctx, log, b, limit)
			return nil, fmt.Errorf("waited longer than Git.MaxSlotWait (%s) for a build slot", p.maxSlotWait)
		}
		if canPark {
			log.Info("build parked: no free build slot", "in_use", w.InUse, "limit", w.Limit, "position", w.Position)
			return nil, &parkedError{recheck: p.parkRecheck, wait: w}
		}
		timer := time.NewTimer(p.slots.Sema.CheckInterval())
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-p.stopping:
			timer.Stop()
			<-ctx.Done() // asynq requeues the task when the grace period ends
			return nil, ctx.Err()
		case <-woken:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// holderToken is the slot's holder: one attempt of one build.
func holderToken(at registry.Attempt) string {
	return strconv.FormatInt(at.Build, 10) + ":" + strconv.FormatInt(at.Token, 10)
}

// parkFor is how long a parked build keeps its place without coming back:
// a few of its own rechecks, so only a build whose task is gone drops out.
func (p *Pipeline) parkFor() time.Duration { return 3*p.parkRecheck + 30*time.Second }

// release gives the slot back and wakes the parked builds that may go now.
func (p *Pipeline) release(ctx context.Context, log *slog.Logger, lease *semaphore.Lease) {
	if _, err := p.slots.Release(context.WithoutCancel(ctx), lease); err != nil {
		log.Warn("could not release the build slot", "error", err)
	}
}

// leave gives up a build's place in line and wakes the parked builds that
// may go instead.
func (p *Pipeline) leave(ctx context.Context, log *slog.Logger, b *registry.Build, limit int) {
	if _, err := p.slots.Leave(context.WithoutCancel(ctx), b, limit); err != nil {
		log.Warn("could not leave the line for a build slot; the place lapses by itself", "build", b.ID, "error", err)
	}
}

// Sweep wakes, every SweepEvery until ctx ends, the parked builds that
// may take a free slot but were not woken: their releaser died between
// release and wake, or a holder's lease ran out.
func (p *Pipeline) Sweep(ctx context.Context) {
	for {
		d := p.sweepEvery - p.sweepEvery/10 + rand.N(p.sweepEvery/5+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		keys, err := p.slots.Sema.WaitingKeys(ctx)
		if err != nil {
			continue
		}
		for _, key := range keys {
			if _, err := p.slots.Next(ctx, key); err != nil {
				p.log.Warn("could not look for parked builds to wake", "slots", key, "error", err)
			}
		}
	}
}

// hold confirms, every FenceAfter/4, that attempt at still holds its
// build: the current attempt, its task leased to this worker, the build
// not canceled, and its slot lease renewed. A cancel found so ends the
// build as a cancel; a lost hold as a *fence.StoppedError.
func (p *Pipeline) hold(ctx context.Context, at registry.Attempt, lease *semaphore.Lease, stop context.CancelCauseFunc) (end func()) {
	taskID, _ := asynq.GetTaskID(ctx)
	qname, _ := asynq.GetQueueName(ctx)
	leaseKey := queue.LeaseKey(qname)
	if taskID == "" {
		leaseKey = "" // not run by asynq (the package's tests): no task lease to check
	}
	h := &fence.Hold{After: p.fenceAfter, Confirm: func(cctx context.Context) error {
		err := p.registry.ConfirmAttempt(cctx, at, leaseKey, taskID)
		if errors.Is(err, registry.ErrBuildCanceled) {
			stop(errCanceled)
			return nil
		}
		if err == nil && lease != nil {
			err = lease.Renew(cctx)
		}
		if err != nil {
			return err
		}
		// Counted only once it would survive a failover: the fence's
		// proof needs the renewed lease on the master that follows.
		return p.durable(cctx)
	}}
	return h.Run(stop)
}

// write applies edit to the build as attempt at. A refusal (a newer
// attempt took over) is logged as such and never applied. While Redis
// cannot be reached it tries again for up to lateWrites, so an attempt
// that was cut off still records its end, or learns it was superseded.
func (p *Pipeline) write(ctx context.Context, log *slog.Logger, at registry.Attempt, edit func(*registry.Build) error) (*registry.Build, error) {
	return p.writeWithLog(ctx, log, at, nil, edit)
}

// writeWithLog is write that also appends text to the build's log, in the
// same script: text lands only with the record.
func (p *Pipeline) writeWithLog(ctx context.Context, log *slog.Logger, at registry.Attempt, text []byte, edit func(*registry.Build) error) (*registry.Build, error) {
	return p.retrying(ctx, log, at, func() (*registry.Build, error) {
		return p.registry.UpdateBuildWithLogAs(ctx, at, text, int64(p.logLimit), p.logLimit.String(), edit)
	})
}

// retrying runs the record write do, again while Redis cannot be reached,
// for up to lateWrites.
func (p *Pipeline) retrying(ctx context.Context, log *slog.Logger, at registry.Attempt, do func() (*registry.Build, error)) (*registry.Build, error) {
	deadline := time.Now().Add(p.lateWrites)
	delay := 200 * time.Millisecond
	for {
		b, err := do()
		var se *registry.SupersededError
		switch {
		case err == nil:
			return b, nil
		case errors.As(err, &se):
			log.Warn("stale write refused", "attempt_token", at.Token, "reason", se.Error())
			return nil, err
		case errors.Is(err, errSkip), errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrConflict):
			return nil, err
		case ctx.Err() != nil || time.Now().After(deadline):
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// writeEnd is writeWithLog for an attempt's last write, whose text (the
// log's last lines) must land even when the record is not written (a
// cancel came first), unless a newer attempt took over.
func (p *Pipeline) writeEnd(ctx context.Context, log *slog.Logger, at registry.Attempt, text []byte, edit func(*registry.Build) error) (*registry.Build, error) {
	b, err := p.writeWithLog(ctx, log, at, text, edit)
	if err != nil && !errors.Is(err, registry.ErrSuperseded) {
		p.appendLog(ctx, log, at, text)
	}
	return b, err
}

// writeLast is writeEnd for the write that records a build succeeded
// (source and pkg name where its artifacts are stored). The build's whole
// log, Redis's and text, goes into the store first; the record names it
// and Redis's copy is dropped in the same script. Reading the log back
// from Redis to move it after (buildlog.Logs.Move) cost a no-op build 40%
// of the worker's CPU. When the log cannot go so (Redis's copy unread or
// past its cap, the store failing, the log changed meanwhile), it is
// writeEnd, and the returned record names no stored log: the caller moves
// it after, as for a failed build.
func (p *Pipeline) writeLast(ctx context.Context, log *slog.Logger, at registry.Attempt, source, pkg string, text []byte, edit func(*registry.Build) error) (*registry.Build, error) {
	sl, before, ok := p.putLog(ctx, log, at, source, pkg, text)
	if !ok {
		return p.writeEnd(ctx, log, at, text, edit)
	}
	b, err := p.retrying(ctx, log, at, func() (*registry.Build, error) {
		return p.registry.UpdateBuildDroppingLogAs(ctx, at, before, func(b *registry.Build) error {
			if err := edit(b); err != nil {
				return err
			}
			b.Log = &sl
			return nil
		})
	})
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, registry.ErrLogChanged):
		p.logs.Discard(context.WithoutCancel(ctx), source, at.Build, sl)
		return p.writeEnd(ctx, log, at, text, edit)
	case errors.Is(err, errSkip), errors.Is(err, registry.ErrSuperseded), errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrConflict):
		// Refused: no record names the stored copy.
		p.logs.Discard(context.WithoutCancel(ctx), source, at.Build, sl)
	}
	// Else (Redis unreachable) the outcome is unknown: the stored copy is
	// the orphan sweep's once no record names it.
	if !errors.Is(err, registry.ErrSuperseded) {
		p.appendLog(ctx, log, at, text)
	}
	return nil, err
}

// putLog stores the build's log as it will be once text is appended, and
// returns it with the length of Redis's copy it was made from; ok is false
// when it was not stored.
func (p *Pipeline) putLog(ctx context.Context, log *slog.Logger, at registry.Attempt, source, pkg string, text []byte) (sl registry.StoredLog, before int64, ok bool) {
	if at.Token == 0 {
		return sl, 0, false
	}
	whole, err := p.registry.Log(ctx, at.Build, 0)
	if err != nil || int64(len(whole)+len(text)) > int64(p.logLimit) {
		// Past the cap, the registry's append decides where the log is cut.
		return sl, 0, false
	}
	before = int64(len(whole))
	whole = append(whole, text...)
	sl, err = p.logs.Put(ctx, source, pkg, at.Build, at.Token, whole)
	if err != nil {
		log.Warn("build log not stored with the build's end; it is moved after", "error", err)
		return sl, 0, false
	}
	return sl, before, true
}

// appendLog appends text to the build's log as attempt at, for output no
// record write carried.
func (p *Pipeline) appendLog(ctx context.Context, log *slog.Logger, at registry.Attempt, text []byte) {
	if len(text) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := p.registry.AppendLogAs(ctx, at, text, int64(p.logLimit), p.logLimit.String())
	if err != nil && !errors.Is(err, registry.ErrSuperseded) {
		log.Warn("could not append to the build log; its last lines are dropped", "error", err)
	}
}

// stopped logs and counts a build its hold stopped, and records that it
// goes back in line (refused when a newer attempt took over).
func (p *Pipeline) stopped(ctx context.Context, log *slog.Logger, at registry.Attempt, se *fence.StoppedError) error {
	p.metrics.Fenced(se.Reason)
	log.Warn("build stopped: its hold was lost", "reason", se.Reason,
		"unconfirmed", se.Unconfirmed.Round(100*time.Millisecond).String(), "detail", se.Error())
	if se.Reason != fence.ReasonSuperseded {
		_, _ = p.write(context.WithoutCancel(ctx), log, at, func(b *registry.Build) error {
			if registry.Terminal(b.Status) {
				return errSkip
			}
			b.Status, b.Detail = registry.StatusQueued, "stopped on worker "+p.worker+": "+se.Error()+"; requeued"
			return nil
		})
	}
	return se // IsFailure says no: not the build's fault
}
