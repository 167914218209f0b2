package api

import (
	"context"
	"fmt"
	"os"

	"github.com/pkgfleet/pkgfleet/internal/poller"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// Poller returns the poller of this API replica (see internal/poller);
// Run starts it.
func (s *Server) Poller() *poller.Poller {
	host, _ := os.Hostname()
	return &poller.Poller{
		Registry: s.Registry, Enqueuer: s.Enqueuer, Git: s.Git, GitFor: s.gitFor, Redis: s.Enqueuer.Redis,
		Log: s.Log.With("component", "poller"), Owner: fmt.Sprintf("%s:%d", host, os.Getpid()),
		Interval: s.Config.Git.PollInterval, Concurrency: s.Config.Git.PollConcurrency, Timeout: s.Config.Git.PollTimeout,
		Observe: s.Metrics.Poll,
	}
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
