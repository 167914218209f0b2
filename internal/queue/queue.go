// Package queue is the contract between those who queue builds (the API's
// run endpoints and the poller) and the workers that run them: the asynq
// task type and payload, the queue of each language, a task id per
// (source, builder, commit) so a commit is queued once, the one entry
// point that records and queues a ref of a builder (Enqueuer.Enqueue),
// cancelling, and the names both sides share (the cancel channel, the
// build-slot keys and limits, the timeouts).
//
// It does not decide when to build (the API and internal/poller do) and
// does not run builds (internal/pipeline does, on the workers).
package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
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

// WakeBy is how a parked build of b is brought back (semaphore.Ask's
// WakeBy): its task's queue and id.
func WakeBy(b *registry.Build) string {
	return Queue(b.Language) + " " + TaskID(b.Source, b.Builder, b.SHA)
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
	// Durability makes a queued build survive a Redis failover before
	// Enqueue acknowledges it (with Sentinel; needs Redis).
	Durability redisconn.Durability
	// StopWait is how long a new build of a commit waits for the task of
	// the commit's previous build to end (0: 10s; see awaitStopped).
	StopWait time.Duration
}

// slots is the builders' slot lines, nil without Redis.
func (e *Enqueuer) slots() *Slots {
	if e.Redis == nil {
		return nil
	}
	return &Slots{Sema: semaphore.New(e.Redis), Registry: e.Registry, Inspector: e.Inspector, BuildConcurrency: e.BuildConcurrency}
}

// Request is one ref of a builder to build.
type Request struct {
	Builder *registry.Builder
	// Ref and SHA name the commit; when Ref is empty, the builder's
	// latest (see Latest) is picked from Refs.
	Ref, SHA string
	Refs     *git.Refs
	Trigger  string // "manual", "rerun", "poll", "webhook"
	// Mode says when an existing build of the commit is returned instead
	// of a new one.
	Mode registry.ClaimMode
}

// Enqueue is the one way a build is queued: it picks the ref (when the
// request names none), records the build unless req.Mode finds an
// existing build of the commit (returned with created == false), queues
// it and logs it on log.
func (e *Enqueuer) Enqueue(ctx context.Context, log *slog.Logger, req Request) (*registry.Build, bool, error) {
	b, ref, sha := req.Builder, req.Ref, req.SHA
	if ref == "" {
		var err error
		if ref, sha, err = Latest(b, req.Refs); err != nil {
			return nil, false, err
		}
	}
	out, created, err := e.record(ctx, &registry.Build{
		Source: b.Source, Builder: b.Name, Language: b.Language, Ref: ref, SHA: sha, Trigger: req.Trigger,
	}, req.Mode)
	if err != nil {
		return nil, false, err
	}
	if created {
		log.Info("build queued", "build", out.ID, "source", b.Source, "builder", b.Name, "ref", ref, "sha", sha, "trigger", req.Trigger)
	}
	return out, created, nil
}

// ErrNoRef is what Latest's errors are (errors.Is): the remote has
// nothing the builder builds. Their text says why.
var ErrNoRef = errors.New("nothing to build")

type noRef struct{ why error }

func (e noRef) Error() string        { return e.why.Error() }
func (e noRef) Unwrap() error        { return e.why }
func (e noRef) Is(target error) bool { return target == ErrNoRef }

// Latest is what b builds now from its remote's refs: the head of its
// branch (default: the remote's default branch) for a commit builder,
// the newest tag matching its tag_pattern for a tag builder.
func Latest(b *registry.Builder, refs *git.Refs) (ref, sha string, err error) {
	if refs == nil {
		return "", "", noRef{errors.New("the remote's refs are unknown")}
	}
	if b.BuildTrigger != registry.TriggerTags {
		ref, sha, err = refs.Branch(b.Branch)
		if err != nil {
			return "", "", noRef{err}
		}
		return ref, sha, nil
	}
	tags, err := refs.MatchingTags(b.TagPattern) // newest first
	if err != nil {
		return "", "", noRef{err}
	}
	if len(tags) == 0 {
		return "", "", noRef{fmt.Errorf("no tag on the remote matches %q", b.TagPattern)}
	}
	return tags[0], refs.Tags[tags[0]], nil
}

// record records b (Source, Builder, Language, Ref, SHA, Trigger set) and
// queues it, unless mode finds an existing build of the commit; that build
// is returned with created == false.
func (e *Enqueuer) record(ctx context.Context, b *registry.Build, mode registry.ClaimMode) (*registry.Build, bool, error) {
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
	// The record, its task and its place in line are answered: only
	// once replicas hold them too is the build acknowledged. One that is
	// not may still survive; asking again finds it (mode) or queues it.
	if err := e.Durability.Wait(ctx, e.Redis); err != nil {
		return nil, false, fmt.Errorf("build %d: %w", out.ID, err)
	}
	return out, true, nil
}

func (e *Enqueuer) queue(ctx context.Context, b *registry.Build) (err error) {
	payload, _ := json.Marshal(Payload{BuildID: b.ID})
	queue := Queue(b.Language)
	id := TaskID(b.Source, b.Builder, b.SHA)
	opts := []asynq.Option{
		asynq.Queue(queue),
		asynq.TaskID(id),
		asynq.Timeout(e.Timeout),
		asynq.MaxRetry(spareRetry(e.MaxAttempts)),
	}
	if slots := e.slots(); slots != nil {
		if err := slots.Join(ctx, b); err != nil {
			return err
		}
		defer func() {
			if err != nil { // never queued: keep no one waiting behind it
				_, _ = slots.Leave(context.WithoutCancel(ctx), b, 1)
			}
		}()
	}
	task := asynq.NewTask(TypeBuild, payload, opts...)
	_, err = e.Client.EnqueueContext(ctx, task)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		// An earlier build of this commit left its task behind (archived
		// after its last failed attempt, or finished but not yet deleted):
		// the registry already decided a new build is due, so clear it.
		if err := e.awaitStopped(ctx, queue, id); err != nil {
			return err
		}
		if derr := e.Inspector.DeleteTask(queue, id); derr != nil && !errors.Is(derr, asynq.ErrTaskNotFound) {
			return fmt.Errorf("clear previous task %s: %w", id, derr)
		}
		_, err = e.Client.EnqueueContext(ctx, task)
	}
	return err
}

// ErrStillStopping is a build that cannot be queued yet: the task of an
// earlier build of the same commit is still active, although that build's
// record is final (a worker writes the record a moment before asynq's task
// ends, and a canceled build's sandbox may take seconds to go).
var ErrStillStopping = errors.New("the previous build of this commit is still stopping; try again in a few seconds")

// awaitStopped waits until task id is no longer active, for at most
// StopWait: the task of a build whose record is final ends without any
// help, so a rerun right after a build finishes (a second click, a
// script) only waits for the worker to let go of it, and then just works.
func (e *Enqueuer) awaitStopped(ctx context.Context, queue, id string) error {
	wait := e.StopWait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		info, err := e.Inspector.GetTaskInfo(queue, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("look up previous task %s: %w", id, err)
		case info.State != asynq.TaskStateActive:
			return nil
		case time.Now().After(deadline):
			return ErrStillStopping
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// spareRetry is the asynq MaxRetry of a build of maxAttempts attempts:
// one more than the retries it may spend. A build that could not start
// because the worker's user-namespace limit was reached goes back in line
// without spending an attempt (pipeline.IsFailure), but asynq archives a task whose
// retry count reached MaxRetry before it asks IsFailure; with the spare
// one, the last attempt can still go back in line. The pipeline counts
// attempts against the build record's MaxAttempts and ends the last one
// with SkipRetry, so the spare is never spent on a failure.
func spareRetry(maxAttempts int) int { return max(maxAttempts, 1) }

// Cancel stops a build that the registry already marks canceled: a queued
// task is deleted (so it is never retried), a worker running or waiting
// with it is told at once on CancelChannel (and notices within
// the pipeline's cancel check anyway), and its place in its builder's slot queue
// is given up.
func (e *Enqueuer) Cancel(ctx context.Context, b *registry.Build) error {
	var errs []error
	if slots := e.slots(); slots != nil {
		if err := e.Redis.Publish(ctx, CancelChannel, strconv.FormatInt(b.ID, 10)).Err(); err != nil {
			errs = append(errs, fmt.Errorf("announce cancel: %w", err))
		}
		if _, err := slots.Leave(ctx, b, slots.Limit(ctx, b.Source, b.Builder)); err != nil {
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
		// The pipeline sees the cancel, stops the build and returns
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

// CancelChannel is the pub/sub channel on which the API announces a
// canceled build (payload: the build id), so the worker running it stops
// at once. Workers also re-read a running build's status now and then, in
// case the message was lost.
const CancelChannel = "pkgfleet:cancel"

// RunTimeout bounds one build attempt once it has its slot: the build
// itself (Git.BuildTimeout) plus room for the clone and the upload.
func RunTimeout(cfg *config.Config) time.Duration { return cfg.Git.BuildTimeout + 15*time.Minute }

// TaskTimeout is the asynq timeout of a build task: a wait for a slot
// (Git.MaxSlotWait) and one attempt. asynq would otherwise cancel a long
// wait at its 30-minute default.
func TaskTimeout(cfg *config.Config) time.Duration { return cfg.Git.MaxSlotWait + RunTimeout(cfg) }

// PlaceInLine is how long a queued build keeps its place in its builder's
// line before a worker takes it: a place that lapses only lets a newer
// build of the builder go first, never loses the build (it joins again).
const PlaceInLine = 10 * time.Minute

// LeaseKey is the Redis key of asynq's leases of queue qname's active
// tasks (a sorted set of task ids). A running build confirms that its task
// is still in it (internal/pipeline's fencing); asynq v0.26 names it so
// (its internal base.LeaseKey), and the pipeline's tests would see every
// build fenced at once if that changed.
func LeaseKey(qname string) string { return "asynq:{" + qname + "}:lease" }
