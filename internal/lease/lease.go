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
