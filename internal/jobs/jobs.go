// Package jobs turns builds into asynq tasks and back: the task type and
// payload, the queue of each language, enqueueing with a task id per
// (source, builder, commit) so a commit is queued once, and the worker's
// handler that clones, builds, stores and records.
//
// It does not poll remotes (the API's run endpoints and the poller decide
// what to build) and does not isolate builds (internal/sandbox does).
package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/redis/go-redis/v9"
)

// TypeBuild is the asynq task type of a build.
const TypeBuild = "build"

// Queue is the asynq queue of a language's builds.
func Queue(lang string) string { return "builds:" + lang }

// Payload is a build task's payload: everything else is read from the
// registry when the task runs, so an edited builder takes effect.
type Payload struct {
	BuildID int64 `json:"build_id"`
}

// TaskID is the asynq task id of a commit's build: the same commit of the
// same builder is queued at most once at a time.
func TaskID(source, builder, sha string) string {
	h := sha256.Sum256([]byte(source + "\x00" + builder + "\x00" + sha))
	return "build-" + hex.EncodeToString(h[:12])
}

// Enqueuer records builds and queues their tasks.
type Enqueuer struct {
	Registry  *registry.Registry
	Client    *asynq.Client
	Inspector *asynq.Inspector
	// Timeout of one attempt (Git.BuildTimeout) plus room for cloning and
	// storing. asynq treats Timeout(0) as 30 minutes, so it is always set.
	Timeout     time.Duration
	MaxAttempts int // Git.BuildRetries
	// Redis, when set, lets Cancel reach running builds and slot queues.
	Redis            redis.UniversalClient
	BuildConcurrency int // Git.BuildConcurrency, for Cancel
}

// Enqueue records b (Source, Builder, Language, Ref, SHA, Trigger set) and
// queues it, unless mode finds an existing build of the commit; that build
// is returned with created == false.
func (e *Enqueuer) Enqueue(ctx context.Context, b *registry.Build, mode registry.ClaimMode) (*registry.Build, bool, error) {
	b.MaxAttempts = e.MaxAttempts
	out, created, err := e.Registry.CreateBuild(ctx, b, mode)
	if err != nil || !created {
		return out, created, err
	}
	if err := e.queue(ctx, out); err != nil {
		_, _ = e.Registry.UpdateBuild(context.WithoutCancel(ctx), out.ID, func(b *registry.Build) error {
			b.Status = registry.StatusFailed
			b.Detail = "could not be queued: " + err.Error()
			now := time.Now().UTC()
			b.FinishedAt = &now
			return nil
		})
		return nil, false, fmt.Errorf("queue build %d: %w", out.ID, err)
	}
	return out, true, nil
}

func (e *Enqueuer) queue(ctx context.Context, b *registry.Build) error {
	payload, _ := json.Marshal(Payload{BuildID: b.ID})
	queue := Queue(b.Language)
	id := TaskID(b.Source, b.Builder, b.SHA)
	opts := []asynq.Option{
		asynq.Queue(queue),
		asynq.TaskID(id),
		asynq.Timeout(e.Timeout),
		asynq.MaxRetry(spareRetry(e.MaxAttempts)),
	}
	task := asynq.NewTask(TypeBuild, payload, opts...)
	_, err := e.Client.EnqueueContext(ctx, task)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		// An earlier build of this commit left its task behind (archived
		// after its last failed attempt, or finished but not yet deleted):
		// the registry already decided a new build is due, so clear it.
		info, ierr := e.Inspector.GetTaskInfo(queue, id)
		if ierr == nil && info.State == asynq.TaskStateActive {
			return fmt.Errorf("the previous build of this commit is still stopping; try again shortly")
		}
		if derr := e.Inspector.DeleteTask(queue, id); derr != nil && !errors.Is(derr, asynq.ErrTaskNotFound) {
			return fmt.Errorf("clear previous task %s: %w", id, derr)
		}
		_, err = e.Client.EnqueueContext(ctx, task)
	}
	return err
}

// spareRetry is the asynq MaxRetry of a build of maxAttempts attempts:
// one more than the retries it may spend. A build that could not start
// because the worker's user-namespace limit was reached goes back in line
// without spending an attempt (IsFailure), but asynq archives a task whose
// retry count reached MaxRetry before it asks IsFailure; with the spare
// one, the last attempt can still go back in line. The handler counts
// attempts against the build record's MaxAttempts and ends the last one
// with SkipRetry, so the spare is never spent on a failure.
func spareRetry(maxAttempts int) int { return max(maxAttempts, 1) }

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

// Cancel stops a build that the registry already marks canceled: a queued
// task is deleted (so it is never retried), a worker running or waiting
// with it is told at once on CancelChannel (and notices within
// Handler.CancelCheck anyway), and its place in its builder's slot queue
// is given up.
func (e *Enqueuer) Cancel(ctx context.Context, b *registry.Build) error {
	var errs []error
	if e.Redis != nil {
		if err := e.Redis.Publish(ctx, CancelChannel, strconv.FormatInt(b.ID, 10)).Err(); err != nil {
			errs = append(errs, fmt.Errorf("announce cancel: %w", err))
		}
		limit := 1
		if bl, err := e.Registry.Builder(ctx, b.Source, b.Builder); err == nil {
			limit = SlotLimit(bl, e.BuildConcurrency)
		}
		if err := semaphore.New(e.Redis, nil).Leave(ctx, SlotKey(b.Source, b.Builder), limit, strconv.FormatInt(b.ID, 10)); err != nil {
			errs = append(errs, fmt.Errorf("leave the slot queue: %w", err))
		}
	}
	queue, id := Queue(b.Language), TaskID(b.Source, b.Builder, b.SHA)
	info, err := e.Inspector.GetTaskInfo(queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
	case err != nil:
		errs = append(errs, fmt.Errorf("look up task %s: %w", id, err))
	case info.State == asynq.TaskStateActive:
		// The handler sees the cancel, stops the build and returns
		// without error, so asynq neither retries nor keeps it.
	default:
		var p Payload
		if json.Unmarshal(info.Payload, &p) == nil && p.BuildID == b.ID {
			if err := e.Inspector.DeleteTask(queue, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
				errs = append(errs, fmt.Errorf("delete task %s: %w", id, err))
			}
		}
	}
	return errors.Join(errs...)
}
