package api

import (
	"context"
	"net/http"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// cancelBuild stops a queued, waiting or running build for good: it is
// marked canceled (which no worker overwrites), its queued task is
// deleted, and a worker running it kills the build's processes.
func (s *Server) cancelBuild(w http.ResponseWriter, r *http.Request) error {
	b, err := s.build(r)
	if err != nil {
		return err
	}
	who := "an API user"
	if name, ok := r.Context().Value(tokenKey{}).(string); ok {
		who = "token " + name
	}
	out, err := s.cancel(r.Context(), b, who)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// cancel marks b canceled by who and stops it.
func (s *Server) cancel(ctx context.Context, b *registry.Build, who string) (*registry.Build, error) {
	out, err := s.Registry.UpdateBuild(ctx, b.ID, func(b *registry.Build) error {
		if registry.Terminal(b.Status) {
			return errorf(http.StatusConflict, "build %d already %s", b.ID, b.Status)
		}
		now := time.Now().UTC()
		b.Status, b.FinishedAt = registry.StatusCanceled, &now
		b.Detail = "canceled by " + who
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.Enqueuer.Cancel(ctx, out); err != nil {
		// The status is what counts: a worker checks it before and while
		// it builds.
		s.Log.Warn("build canceled, but stopping it was incomplete", "build", out.ID, "error", err)
	}
	s.Log.Info("build canceled", "build", out.ID, "by", who)
	return out, nil
}
