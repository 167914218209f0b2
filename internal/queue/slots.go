package queue

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
)

// Slots is a builder's line for build slots as builds use it: the one
// place that knows how a build joins its builder's line when it is
// queued, how it leaves it (canceled, finished while waiting, never
// queued) and wakes the parked builds that may go instead, and what a
// builder's limit is. The semaphore keeps the line; the enqueuer, the
// API's cancel and the workers' pipelines go through Slots.
type Slots struct {
	Sema      *semaphore.Semaphore
	Registry  *registry.Registry
	Inspector *asynq.Inspector // wakes parked builds
	// BuildConcurrency is Git.BuildConcurrency: a tag builder's limit.
	BuildConcurrency int
}

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

// waiter is a build's place in its builder's line: the build, not one
// attempt, so the place survives the build's attempts.
func waiter(id int64) string { return strconv.FormatInt(id, 10) }

// Limit is the slot limit of builder source/name from its record; one
// when the record cannot be read (deleted, or Redis unreachable), which
// wakes at most one waiter too few, never one too many.
func (s *Slots) Limit(ctx context.Context, source, name string) int {
	if bl, err := s.Registry.Builder(ctx, source, name); err == nil {
		return SlotLimit(bl, s.BuildConcurrency)
	}
	return 1
}

// Join puts build b in its builder's line before any worker can see its
// task, so that a newer build of the builder cannot take a slot ahead of
// it.
func (s *Slots) Join(ctx context.Context, b *registry.Build) error {
	return s.Sema.Join(ctx, SlotKey(b.Source, b.Builder), waiter(b.ID), b.ID, PlaceInLine)
}

// Leave takes build b out of its builder's line (limit slots) and wakes
// the parked builds that may go instead; it returns how many it woke. A
// slot the build holds stays held until its holder releases it.
func (s *Slots) Leave(ctx context.Context, b *registry.Build, limit int) (int, error) {
	woken, err := s.Sema.Leave(ctx, SlotKey(b.Source, b.Builder), limit, waiter(b.ID))
	if err != nil {
		return 0, err
	}
	return s.Wake(woken), nil
}

// Release gives a held slot back and wakes the parked builds that may go
// now; it returns how many it woke.
func (s *Slots) Release(ctx context.Context, l *semaphore.Lease) (int, error) {
	woken, err := l.Release(ctx)
	if err != nil {
		return 0, err
	}
	return s.Wake(woken), nil
}

// Next wakes the parked builds of key that may take a slot now (a sweep:
// their releaser died before it woke them, or a holder's lease ran out);
// it returns how many it woke.
func (s *Slots) Next(ctx context.Context, key string) (int, error) {
	source, name, ok := strings.Cut(key, "/")
	if !ok {
		return 0, fmt.Errorf("slot key %q names no builder", key)
	}
	woken, err := s.Sema.Next(ctx, key, s.Limit(ctx, source, name))
	if err != nil {
		return 0, err
	}
	return s.Wake(woken), nil
}

// Wake moves the tasks of parked builds that may take a slot now from
// asynq's retry set back to their queue. A task that is already queued
// or running is refused by asynq, which is fine: it is on its way. It
// returns how many it moved.
func (s *Slots) Wake(woken []semaphore.Woken) int {
	n := 0
	for _, w := range woken {
		queue, id, ok := strings.Cut(w.WakeBy, " ")
		if ok && s.Inspector.RunTask(queue, id) == nil {
			n++
		}
	}
	return n
}

// Evict frees the slot of key that holder holds (an attempt that is no
// longer its build's current one: the reconciler's repair) and wakes the
// parked builds that may go instead; it returns how many it woke.
func (s *Slots) Evict(ctx context.Context, key, holder string) (int, error) {
	source, name, ok := strings.Cut(key, "/")
	if !ok {
		return 0, fmt.Errorf("slot key %q names no builder", key)
	}
	woken, err := s.Sema.Evict(ctx, key, s.Limit(ctx, source, name), holder)
	if err != nil {
		return 0, err
	}
	return s.Wake(woken), nil
}
