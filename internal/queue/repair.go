package queue

import (
	"context"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// Requeue queues b's task again, as Enqueue did when it recorded b: in its
// builder's line first, then the task. It is for a build whose record says
// queued, waiting or running while its task is gone (Redis lost the
// write): the reconciler's repair.
func (e *Enqueuer) Requeue(ctx context.Context, b *registry.Build) error { return e.queue(ctx, b) }

// asynq v0.26's own keys of a queue's tasks (its internal/base), beside
// LeaseKey: the reconciler moves an active task that has no lease back
// to pending, which no asynq API does.
func asynqKey(qname, rest string) string { return "asynq:{" + qname + "}:" + rest }

// ActiveKey is the list of queue qname's active task ids.
func ActiveKey(qname string) string { return asynqKey(qname, "active") }

// PendingKey is the list of queue qname's pending task ids.
func PendingKey(qname string) string { return asynqKey(qname, "pending") }

// TaskKey is the hash of one task of queue qname.
func TaskKey(qname, id string) string { return asynqKey(qname, "t:"+id) }

// ScheduledKey is the sorted set of queue qname's scheduled task ids.
func ScheduledKey(qname string) string { return asynqKey(qname, "scheduled") }

// RetryKey is the sorted set of queue qname's task ids waiting to retry.
func RetryKey(qname string) string { return asynqKey(qname, "retry") }
