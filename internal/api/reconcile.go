package api

import (
	"fmt"
	"os"

	"github.com/pkgfleet/pkgfleet/internal/reconcile"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// Reconciler returns the reconciler of this API replica (see
// internal/reconcile); Run starts it, and only the leader's passes run.
func (s *Server) Reconciler() *reconcile.Reconciler {
	host, _ := os.Hostname()
	return &reconcile.Reconciler{
		Redis: s.Enqueuer.Redis, Registry: s.Registry, Enqueuer: s.Enqueuer, Inspector: s.Enqueuer.Inspector,
		Log: s.Log.With("component", "reconciler"), Owner: fmt.Sprintf("%s:%d", host, os.Getpid()),
		Interval: s.Config.Reconcile.Interval, Grace: s.Config.Reconcile.Grace,
		BuildConcurrency: s.Config.Git.BuildConcurrency,
		Repaired:         s.Metrics.Repairs(reconcile.Kinds),
	}
}

// idJumped logs and counts a jump of the build-id counter: Redis lost
// writes, and ids it may have handed out are skipped.
func (s *Server) idJumped(j registry.IDJump) {
	s.Log.Warn("build ids: Redis may have lost the last ids it handed out; the counter moved past them",
		"reason", j.Reason, "counter", j.Counter, "high_water_mark", j.HighMark, "next_id", j.ID)
	s.Metrics.IDJump(j.Reason)
}

// unreadableRecord logs, once per record in this process, a record a
// listing left out because it could not be read.
func (s *Server) unreadableRecord(key string, err error) {
	if _, said := s.unreadable.LoadOrStore(key, struct{}{}); !said {
		s.Log.Warn("a record in Redis could not be read and is left out of listings; inspect, repair or delete it", "key", key, "error", err)
	}
}
