// Package lease holds the timings a running build's single copy rests
// on, each defined once: the build slot's lease L, the fence period T (how
// long a worker lets a build's hold go unconfirmed before it stops it),
// and the inequality between them that docs/fleet.md proves. The
// semaphore, the fence, the settings and the pipeline derive theirs from
// here; it imports nothing of the project, so the settings can use it.
package lease

import (
	"fmt"
	"time"
)

const (
	// Slot is L, the build slot's lease: a holder that stops renewing
	// loses its slot after it.
	Slot = 60 * time.Second
	// DefaultFence is T by default: a third of L (20s), also below
	// asynq's 30s task lease.
	DefaultFence = Slot / 3
	// MinFence is the smallest T: a confirmation every T/4 must fit a
	// few Redis round trips.
	MinFence = time.Second
	// Task is asynq's lease of a running task (its rdb.LeaseDuration, not
	// configurable): a worker's asynq keeps trying to settle a task it
	// ran until its lease of it runs out.
	Task = 30 * time.Second
)

// MaxFence is the largest T a slot lease of slot allows: a quarter of the
// lease stays for the stop itself (killing the build's processes) and for
// clocks that run at slightly different rates (45s for the 60s lease).
func MaxFence(slot time.Duration) time.Duration { return slot * 3 / 4 }

// CheckFence refuses a T that a slot lease of slot cannot keep safe,
// saying the inequality it breaks.
func CheckFence(fence, slot time.Duration) error {
	if fence < MinFence || fence > MaxFence(slot) {
		return fmt.Errorf("Worker.FenceAfter must be between %gs and %gs: the fence period T (%s) must satisfy %gs <= T <= 3/4 x L, the build slot's lease (%gs)",
			MinFence.Seconds(), MaxFence(slot).Seconds(), fence, MinFence.Seconds(), slot.Seconds())
	}
	return nil
}

// CheckDurability refuses durability settings under which a worker cut
// off with an old master could still build while another worker starts
// the same build on the new one (docs/fleet.md, "Redis failover"): a
// write that must survive a failover counts only once waitReplicas
// replicas hold it, and it waits at most wait for them, so
//
//	T + W <= 3/4 x L   (the hold begins up to W after its slot was granted)
//	4 x W < T          (a confirmation, its wait included, fits its period T/4)
//
// with T the fence period, W the wait and L the slot's lease.
func CheckDurability(fence, slot time.Duration, waitReplicas int, wait time.Duration) error {
	if waitReplicas < 1 {
		return fmt.Errorf("Redis.WaitReplicas must be at least 1 with Sentinel (got %d): a write no replica holds may be lost in a failover, and with it the fence's proof", waitReplicas)
	}
	if wait <= 0 || fence+wait > MaxFence(slot) || 4*wait >= fence {
		return fmt.Errorf("Redis.WaitTimeout (W = %s) and Worker.FenceAfter (T = %s) must satisfy T + W <= 3/4 x L (%gs, L the build slot's lease) and 4 x W < T", wait, fence, MaxFence(slot).Seconds())
	}
	return nil
}
