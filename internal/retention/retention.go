// Package retention bounds Redis's memory by policy, not by the fleet's
// age: a pass moves finished builds' logs that are still in Redis into
// the artifact store (internal/buildlog; the worker usually did already)
// and drops the finished builds the policy no longer keeps, with their
// stored logs and the artifacts no index serves. One API replica, the
// leader of a lease, runs the passes, each in bounded batches.
//
// The policy (Retention.*) keeps the last KeepBuilds builds of each
// git-builder, every build whose artifacts the index serves
// (index.Needed), and every build that finished within KeepFor. It does
// not touch builds that are not finished, nor decide what the index
// serves.
package retention

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/buildlog"
	"github.com/pkgfleet/pkgfleet/internal/index"
	"github.com/pkgfleet/pkgfleet/internal/leader"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/redis/go-redis/v9"
)

// keyLease is the retention pass's leader lease: one pass per fleet.
const keyLease = "pkgfleet:retention:leader"

// Policy says which finished builds are kept.
type Policy struct {
	KeepBuilds int           // the last this many of each git-builder
	KeepFor    time.Duration // every build that finished within this long
}

// String says the policy in words, for the page and the logs.
func (p Policy) String() string {
	s := fmt.Sprintf("the last %d builds of each git-builder, every build whose artifacts an index serves", p.KeepBuilds)
	if p.KeepFor <= 0 {
		return "keeps " + s
	}
	return fmt.Sprintf("keeps %s, and every build that finished in the last %s", s, days(p.KeepFor))
}

func days(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		if n := d / (24 * time.Hour); n != 1 {
			return fmt.Sprintf("%d days", n)
		}
		return "day"
	}
	return d.String()
}

// Kinds of what a pass removes, for the metric.
const (
	KindBuild    = "build"     // a build record (and its Redis keys)
	KindFile     = "file"      // a stored file: a log, or an artifact no index serves
	KindRedisLog = "redis_log" // a log moved out of Redis into the store
)

// Kinds lists them.
var Kinds = []string{KindBuild, KindFile, KindRedisLog}

// Retainer runs the passes on the leader.
type Retainer struct {
	Registry *registry.Registry
	Logs     *buildlog.Logs
	Redis    redis.UniversalClient
	Policy   Policy
	Every    time.Duration // between passes (Retention.Interval)
	Owner    string        // this process, in the lease
	Log      *slog.Logger
	// Removed counts what a pass removed, by kind (a metric); nil: none.
	Removed func(kind string, n int)
	// Batch is how many records one Redis call reads or drops (default
	// 500).
	Batch int
	// MoveAfter is how long after a build finished its log may move here
	// (default 1m): the worker moves it itself, and a canceled build's
	// worker may still append its last lines.
	MoveAfter time.Duration
	Lease     func(*leader.Elector) // tests shorten the lease
}

// Result is what one pass did.
type Result struct {
	Kept, Dropped, Files, Moved int
}

// Run takes part in the election and runs a pass every Every while
// leading, until ctx ends.
func (r *Retainer) Run(ctx context.Context) error {
	e := leader.New(r.Redis, keyLease, r.Owner, r.Log)
	if r.Lease != nil {
		r.Lease(e)
	}
	return e.Run(ctx, func(ctx context.Context, _ *leader.Term) {
		t := time.NewTicker(max(r.Every, time.Second))
		defer t.Stop()
		for {
			res, err := r.Pass(ctx, time.Now())
			if err != nil && ctx.Err() == nil {
				r.Log.Warn("retention pass stopped early", "dropped", res.Dropped, "files", res.Files, "moved", res.Moved, "error", err)
			} else if res.Dropped+res.Moved > 0 {
				r.Log.Info("retention pass", "policy", r.Policy.String(), "kept", res.Kept, "dropped", res.Dropped, "files", res.Files, "moved", res.Moved)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// Pass reads every build once, oldest first, in batches, and decides
// from what it read: it moves the logs of kept finished builds still in
// Redis into the store, then drops the finished builds the policy does
// not keep, a batch at a time (each only while its record is as it is
// then), then their files.
func (r *Retainer) Pass(ctx context.Context, now time.Time) (Result, error) {
	var res Result
	batch := r.Batch
	if batch <= 0 {
		batch = 500
	}
	moveAfter := r.MoveAfter
	if moveAfter <= 0 {
		moveAfter = time.Minute
	}
	all, err := r.read(ctx, batch)
	if err != nil {
		return res, err
	}
	keep := r.kept(all, now)
	var drop []int64
	for _, b := range all {
		switch {
		case !registry.Terminal(b.Status):
		case !keep[b.ID]:
			drop = append(drop, b.ID)
		default:
			res.Kept++
			if b.Log == nil && b.AttemptToken != 0 && now.Sub(finished(b)) >= moveAfter {
				moved, err := r.Logs.Move(ctx, b.ID)
				if err != nil {
					r.Log.Warn("build log not moved into the store", "build", b.ID, "error", err)
				} else if moved {
					res.Moved++
					r.count(KindRedisLog, 1)
				}
			}
		}
	}
	for len(drop) > 0 {
		ids := drop[:min(batch, len(drop))]
		drop = drop[len(ids):]
		recs, err := r.Registry.Records(ctx, ids)
		if err != nil {
			return res, err
		}
		dropped, err := r.Registry.DropBuilds(ctx, recs)
		if err != nil {
			return res, err
		}
		res.Dropped += len(dropped)
		r.count(KindBuild, len(dropped))
		n := r.removeFiles(ctx, dropped)
		res.Files += n
		r.count(KindFile, n)
	}
	return res, nil
}

// read returns every build, oldest first, with only what the policy
// and the moves need (not phases, fetches, warnings, details).
func (r *Retainer) read(ctx context.Context, batch int) ([]*registry.Build, error) {
	var all []*registry.Build
	for after := int64(0); ; {
		builds, next, err := r.Registry.BuildSummaries(ctx, after, batch)
		if err != nil || next == 0 {
			return all, err
		}
		after = next
		all = append(all, builds...)
	}
}

// kept applies the policy to all (oldest first) and returns the ids it
// keeps: the builds whose artifacts the index serves, the last
// KeepBuilds of each builder, those that finished within KeepFor.
func (r *Retainer) kept(all []*registry.Build, now time.Time) map[int64]bool {
	keep := map[int64]bool{}
	var succeeded []*registry.Build // newest first, as index.Needed reads them
	last := map[string]int{}        // builder → how many of its newest were seen
	for i := len(all) - 1; i >= 0; i-- {
		b := all[i]
		if b.Status == registry.StatusSucceeded {
			succeeded = append(succeeded, b)
		}
		k := b.Source + "/" + b.Builder
		if last[k] < r.Policy.KeepBuilds {
			last[k]++
			keep[b.ID] = true
		}
		if r.Policy.KeepFor > 0 && now.Sub(finished(b)) < r.Policy.KeepFor {
			keep[b.ID] = true
		}
	}
	for id := range index.Needed(succeeded) {
		keep[id] = true
	}
	return keep
}

// finished is when b finished (its creation when no end was recorded).
func finished(b *registry.Build) time.Time {
	if b.FinishedAt != nil {
		return *b.FinishedAt
	}
	return b.CreatedAt
}

// removeFiles removes the stored files of dropped builds and returns how
// many it removed. A file it cannot remove names no record any more: the
// orphan sweep removes it later.
func (r *Retainer) removeFiles(ctx context.Context, dropped []*registry.Build) int {
	n := 0
	for _, b := range dropped {
		if b.AttemptToken != 0 && len(b.Artifacts) > 0 && b.Package != "" {
			if err := r.Logs.Store.Discard(ctx, b.Source, b.Package, b.ID, b.AttemptToken, b.Artifacts); err != nil {
				r.Log.Warn("artifacts of a dropped build not removed; the orphan sweep will", "build", b.ID, "error", err)
			} else {
				n += len(b.Artifacts)
			}
		}
		if l := b.Log; l != nil {
			if err := r.Logs.Store.Discard(ctx, b.Source, l.Package, b.ID, l.Token, []registry.Artifact{{File: l.File}}); err != nil {
				r.Log.Warn("log of a dropped build not removed; the orphan sweep will", "build", b.ID, "error", err)
			} else {
				n++
			}
		}
	}
	return n
}

func (r *Retainer) count(kind string, n int) {
	if r.Removed != nil && n > 0 {
		r.Removed(kind, n)
	}
}
