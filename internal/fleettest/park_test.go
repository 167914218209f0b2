package fleettest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// Parking (issue 12): a build that finds its builder's slots taken gives
// its worker slot back, so one busy builder's waiters never keep another
// builder's builds from running.

func TestABusyBuildersWaitersDoNotKeepOtherBuildersWaiting(t *testing.T) {
	t.Parallel()
	f := setup(t, 1)
	a := f.builder("busy", registry.TriggerCommits, 5)
	b := f.builder("other", registry.TriggerCommits, 1)
	release := filepath.Join(t.TempDir(), "go")
	// busy's builds hold their slot until the test says so; other's end
	// at once.
	f.recipe.command.Store(fmt.Sprintf(`if grep -q busy DESCRIPTION; then while [ ! -e %s ]; do sleep 0.05; done; fi`, release))
	f.worker("w", 2) // two worker slots: one for busy's running build, one spare
	busy := []int64{f.rerun("busy", a[0])}
	f.waitStatus(busy[0], registry.StatusRunning)
	for _, sha := range a[1:] {
		busy = append(busy, f.rerun("busy", sha))
	}
	for _, id := range busy[1:] {
		f.waitStatus(id, registry.StatusWaiting)
	}
	// Four of busy's builds wait for its one slot; other's build must
	// still get the spare worker slot while busy's first one runs.
	other := f.rerun("other", b[0])
	f.waitStatus(other, registry.StatusSucceeded)
	if got := f.build(busy[0]).Status; got != registry.StatusRunning {
		t.Fatalf("busy's first build is %s; the test needs it running", got)
	}
	if b := f.build(busy[4]); b.Status != registry.StatusWaiting || !strings.Contains(b.Detail, "4th in line") {
		t.Fatalf("busy's last build: %s (%s), want waiting, 4th in line", b.Status, b.Detail)
	}
	os.WriteFile(release, nil, 0o644)
	for _, id := range busy {
		f.waitStatus(id, registry.StatusSucceeded)
	}
}

func TestParkedBuildsOfABuilderStartInOrderOfTheirIDs(t *testing.T) {
	t.Parallel()
	f := setup(t, 1)
	shas := f.builder("fifo", registry.TriggerCommits, 5)
	release := filepath.Join(t.TempDir(), "go")
	f.recipe.command.Store(fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done", release))
	// All five are queued before any worker runs; four worker slots then
	// take them at once, in whatever order asynq hands them out. The
	// line holds them from their queueing on, so they start by build id.
	var ids []int64
	for _, sha := range shas {
		ids = append(ids, f.rerun("fifo", sha))
	}
	f.worker("a", 2)
	f.worker("b", 2)
	f.waitStatus(ids[0], registry.StatusRunning)
	for _, id := range ids[1:] {
		f.waitStatus(id, registry.StatusWaiting)
	}
	os.WriteFile(release, nil, 0o644)
	var builds []*registry.Build
	for _, id := range ids {
		b := f.waitStatus(id, registry.StatusSucceeded)
		if b.Attempts != 1 {
			t.Fatalf("build %d took %d attempts; parking must spend none", id, b.Attempts)
		}
		builds = append(builds, b)
	}
	byStart := append([]*registry.Build(nil), builds...)
	sort.Slice(byStart, func(i, j int) bool { return byStart[i].StartedAt.Before(*byStart[j].StartedAt) })
	for i, b := range byStart {
		if b.ID != ids[i] {
			t.Fatalf("builds started in the order %v, want %v", startOrder(byStart), ids)
		}
	}
	if got := f.recipe.peakOf("fifo"); got != 1 {
		t.Fatalf("the commit builder ran %d builds at once", got)
	}
	// Every parked build says how long it waited.
	for _, b := range builds[1:] {
		if !hasPhase(b, registry.PhaseWaiting) || !hasPhase(b, registry.PhaseQueued) {
			t.Fatalf("build %d phases %+v lack queued or waiting", b.ID, b.Phases)
		}
	}
}

// buildsOf lists the builds of the builders of source "src".
func (f *fleet) buildsOf(builders ...string) []*registry.Build {
	f.t.Helper()
	var out []*registry.Build
	for _, name := range builders {
		list, err := f.reg.Builds(context.Background(), registry.Filter{Source: "src", Builder: name, Limit: 1000})
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, list...)
	}
	return out
}

func startOrder(bs []*registry.Build) []int64 {
	var out []int64
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

func hasPhase(b *registry.Build, phase string) bool {
	for _, p := range b.Phases {
		if p.Phase == phase {
			return true
		}
	}
	return false
}

// BenchmarkHeadOfLine is issue 12's case: 4 worker slots, builder A
// (limit 1) with 50 builds queued ahead of builder B's 20 (B may use every
// slot). Ideal: A's builds run one after another on one slot while B's
// take the other three, so B is done after ceil(20/3) build times. It
// reports B's finish against that ideal (with the builds' measured
// length), when B's first build started, and how busy the slots were while
// B's builds were queued.
func BenchmarkHeadOfLine(b *testing.B) {
	const buildTime = 300 * time.Millisecond
	for range b.N {
		f := setup(b, 4)
		a := f.builder("a", registry.TriggerCommits, 50)
		bb := f.builder("b", registry.TriggerTags, 20)
		f.recipe.command.Store(fmt.Sprintf("sleep %.1f", buildTime.Seconds()))
		f.worker("w", 4)
		start := time.Now()
		for _, sha := range a {
			f.rerun("a", sha)
		}
		var bIDs []int64
		for _, sha := range bb {
			bIDs = append(bIDs, f.rerun("b", sha))
		}
		var last, firstB, queuedB time.Time
		var busy, bRun time.Duration
		for _, id := range bIDs {
			bld := f.waitStatusFor(id, registry.StatusSucceeded, 5*time.Minute)
			if bld.FinishedAt.After(last) {
				last = *bld.FinishedAt
			}
			if queuedB.IsZero() || bld.CreatedAt.Before(queuedB) {
				queuedB = bld.CreatedAt
			}
			if firstB.IsZero() || bld.StartedAt.Before(firstB) {
				firstB = *bld.StartedAt
			}
			bRun += bld.FinishedAt.Sub(*bld.StartedAt)
		}
		// Slot use while B's builds were queued (before that, only A's
		// one slot has work): the build time of every build (A's and B's)
		// inside [B's first queued, last], over 4 slots.
		for _, bld := range f.buildsOf("a", "b") {
			if bld.StartedAt == nil {
				continue
			}
			end := last
			if bld.FinishedAt != nil && bld.FinishedAt.Before(last) {
				end = *bld.FinishedAt
			}
			if s := maxTime(*bld.StartedAt, queuedB); s.Before(end) {
				busy += end.Sub(s)
			}
		}
		took := last.Sub(start)
		// The ideal schedule with the builds' real length (clone, the
		// fake tool, store, record: more than buildTime on a busy host).
		ideal := time.Duration((20+2)/3) * (bRun / 20)
		b.ReportMetric(float64(took)/float64(ideal), "B-finish/ideal")
		b.ReportMetric(firstB.Sub(start).Seconds(), "B-first-start-s")
		b.ReportMetric((bRun / 20).Seconds(), "build-s")
		b.ReportMetric(100*float64(busy)/float64(4*last.Sub(queuedB)), "slot-use-%")
		testenv.Eventually(b, 5*time.Minute, "A's builds to finish", func() bool {
			for _, bld := range f.buildsOf("a") {
				if !registry.Terminal(bld.Status) {
					return false
				}
			}
			return true
		})
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
