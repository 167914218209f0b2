package api

import (
	"context"
	"fmt"
	"os"

	"github.com/pkgfleet/pkgfleet/internal/buildlog"
	"github.com/pkgfleet/pkgfleet/internal/poller"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/retention"
	"github.com/pkgfleet/pkgfleet/internal/store"
)

// owner names this replica in the leases it campaigns for.
func owner() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// Poller returns the poller of this API replica (see internal/poller);
// Run starts it.
func (s *Server) Poller() *poller.Poller {
	return &poller.Poller{
		Registry: s.Registry, Enqueuer: s.Enqueuer, Git: s.Git, GitFor: s.gitFor, Redis: s.Enqueuer.Redis,
		Log: s.Log.With("component", "poller"), Owner: owner(),
		Interval: s.Config.Git.PollInterval, Concurrency: s.Config.Git.PollConcurrency, Timeout: s.Config.Git.PollTimeout,
		Observe: s.Metrics.Poll,
	}
}

// Sweeper is the orphan sweep of the artifact store (one per fleet).
func (s *Server) Sweeper() *store.Sweeper {
	return &store.Sweeper{
		Store: s.Store, Registry: s.Registry, Redis: s.Enqueuer.Redis,
		Owner: owner(), Grace: s.Config.Storage.OrphanGrace,
		Log: s.Log.With("component", "orphan-sweep"), Removed: s.Metrics.OrphansRemoved,
	}
}

// Retainer is the retention pass (one per fleet): it bounds what Redis
// holds by the policy in Retention.*.
func (s *Server) Retainer() *retention.Retainer {
	return &retention.Retainer{
		Registry: s.Registry, Logs: s.logs(), Redis: s.Enqueuer.Redis,
		Policy: s.RetentionPolicy(), Every: s.Config.Retention.Interval,
		Owner: owner(), Log: s.Log.With("component", "retention"), Removed: s.Metrics.Retention(retention.Kinds),
	}
}

// RetentionPolicy is the settings' retention policy.
func (s *Server) RetentionPolicy() retention.Policy {
	return retention.Policy{KeepBuilds: s.Config.Retention.KeepBuilds, KeepFor: s.Config.Retention.KeepFor}
}

// logs reads build logs, live in Redis or stored once finished.
func (s *Server) logs() *buildlog.Logs {
	return &buildlog.Logs{Registry: s.Registry, Store: s.Store}
}

// withPollStatus fills in the poller's view of each builder, for output.
func (s *Server) withPollStatus(ctx context.Context, builders ...*registry.Builder) error {
	if s.Enqueuer.Redis == nil || len(builders) == 0 {
		return nil
	}
	keys := make([]string, len(builders))
	for i, b := range builders {
		keys[i] = b.Key()
	}
	st, err := poller.Statuses(ctx, s.Enqueuer.Redis, keys...)
	if err != nil {
		return err
	}
	for _, b := range builders {
		if v, ok := st[b.Key()]; ok {
			b.LastPollAt, b.NextPollAt, b.LastError = v.LastPollAt, v.NextPollAt, v.LastError
		}
	}
	return nil
}
