package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/leader"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/redis/go-redis/v9"
)

// keySweepLease is the orphan sweep's leader lease: one sweep per fleet.
const keySweepLease = "pkgfleet:orphans:leader"

// Sweeper deletes orphans: attempts' files that no build record names,
// older than Grace. A worker killed between its upload and its record,
// or a record write that a Redis failover lost, leaves them; the build
// itself is built again under a new attempt token. Every API replica
// runs one; only the leader of the lease sweeps.
type Sweeper struct {
	Store    Artifacts
	Registry *registry.Registry
	Redis    redis.UniversalClient
	Owner    string        // this process, in the lease
	Grace    time.Duration // Storage.OrphanGrace
	Every    time.Duration // default Grace/4, at most 15m
	Log      *slog.Logger
	Removed  func(n int)           // counts removed orphans (a metric); nil: none
	Lease    func(*leader.Elector) // tests shorten the lease
}

// Run takes part in the election and sweeps while leading, until ctx
// ends.
func (s *Sweeper) Run(ctx context.Context) error {
	e := leader.New(s.Redis, keySweepLease, s.Owner, s.Log)
	if s.Lease != nil {
		s.Lease(e)
	}
	return e.Run(ctx, func(ctx context.Context, _ *leader.Term) {
		every := s.Every
		if every <= 0 {
			every = min(max(s.Grace/4, time.Second), 15*time.Minute)
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if n, err := s.Sweep(ctx, time.Now()); err != nil && ctx.Err() == nil {
				s.Log.Warn("orphan sweep stopped early", "store", s.Store.String(), "removed", n, "error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// maxUnnamed is how many orphans one sweep removes without question;
// more than that, and more than half the files it looked at, and it
// removes none: a Redis that is not the fleet's (an empty one, another
// database) would name nothing, and the sweep would empty the store.
const maxUnnamed = 10

// Sweep removes once the orphans older than Grace at now, and returns how
// many it removed. A file whose build cannot be read now is left for the
// next sweep. It first finds them all, then removes them, unless they
// are most of the store (maxUnnamed).
func (s *Sweeper) Sweep(ctx context.Context, now time.Time) (int, error) {
	if a, ok := s.Store.(interface {
		AbortStale(context.Context, time.Time) (int, error)
	}); ok {
		if n, err := a.AbortStale(ctx, now.Add(-s.Grace)); err != nil {
			return 0, err
		} else if n > 0 {
			s.Log.Info("aborted stale multipart uploads", "uploads", n)
		}
	}
	builds := map[int64]*registry.Build{} // nil: no such build
	var orphans []Stored
	old := 0
	err := s.Store.Walk(ctx, func(f Stored) error {
		if now.Sub(f.ModTime) < s.Grace {
			return nil
		}
		old++
		b, seen := builds[f.Build]
		if !seen {
			var err error
			b, err = s.Registry.Build(ctx, f.Build)
			if errors.Is(err, registry.ErrNotFound) {
				b, err = nil, nil
			}
			if err != nil {
				return err
			}
			builds[f.Build] = b
		}
		if !names(b, f) {
			orphans = append(orphans, f)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(orphans) > maxUnnamed && 2*len(orphans) > old {
		return 0, fmt.Errorf("%d of the %d files older than Storage.OrphanGrace in the %s name no build record: removing none (is this the fleet's Redis?)", len(orphans), old, s.Store)
	}
	removed := 0
	defer func() {
		if s.Removed != nil && removed > 0 {
			s.Removed(removed)
		}
	}()
	for _, f := range orphans {
		if err := s.Store.Remove(ctx, f); err != nil {
			return removed, err
		}
		removed++
		s.Log.Info("removed an orphaned artifact", "file", f.Name(), "age", now.Sub(f.ModTime).Round(time.Second))
	}
	return removed, nil
}

// names reports whether record b names the stored file f (an artifact,
// or its log), or may still: its attempt f.Token is under way (Put
// returns before the record is written).
func names(b *registry.Build, f Stored) bool {
	if b == nil || b.Source != f.Source || b.AttemptToken != f.Token {
		return false
	}
	if !registry.Terminal(b.Status) {
		return true
	}
	if l := b.Log; l != nil && l.Package == f.Package && l.Token == f.Token && l.File == f.File {
		return true // its log, moved out of Redis (internal/buildlog)
	}
	if b.Package != f.Package {
		return false
	}
	for _, a := range b.Artifacts {
		if a.File == f.File {
			return true
		}
	}
	return false
}
