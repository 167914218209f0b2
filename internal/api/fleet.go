package api

import (
	"context"
	"net/http"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/roster"
)

// listWorkers shows the live fleet: what each worker builds, its slots and
// its user-namespace budget.
func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request) error {
	workers, err := roster.List(r.Context(), s.Enqueuer.Redis)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Workers{Workers: workers})
	return nil
}

// namespaces reports PPM's user-namespace requirement for the configured
// builders beside what the live workers need and their hosts allow.
func (s *Server) namespaces(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	builders, err := s.Registry.CountBuildersByKind(ctx)
	if err != nil {
		return err
	}
	workers, err := roster.List(ctx, s.Enqueuer.Redis)
	if err != nil {
		return err
	}
	budget := roster.NewBudget(builders, s.Config.Git.BuildConcurrency, workers)
	list := []apiv1.WorkerNamespaces{}
	for _, wk := range workers {
		list = append(list, apiv1.WorkerNamespaces{
			Name: wk.Name, Slots: wk.Slots, Needed: wk.NamespacesNeeded,
			MaxUserNamespaces: wk.MaxUserNamespaces, InUse: wk.NamespacesInUse,
			OK: wk.MaxUserNamespaces < 0 || wk.NamespacesNeeded <= wk.MaxUserNamespaces,
		})
	}
	writeJSON(w, http.StatusOK, apiv1.NamespaceBudget{Budget: budget, Workers: list})
	return nil
}

// noWorkerDetail tells, on queued builds, that no live worker can build
// their language, instead of letting them wait silently. Output only.
func (s *Server) noWorkerDetail(ctx context.Context, builds ...*registry.Build) error {
	var queued []*registry.Build
	for _, b := range builds {
		if b.Status == registry.StatusQueued {
			queued = append(queued, b)
		}
	}
	if len(queued) == 0 || s.Enqueuer.Redis == nil {
		return nil
	}
	workers, err := roster.List(ctx, s.Enqueuer.Redis)
	if err != nil {
		return err
	}
	for _, b := range queued {
		if msg := roster.NoWorkerFor(workers, b.Language); msg != "" {
			if b.Detail != "" {
				msg = b.Detail + "; " + msg
			}
			b.Detail = msg
		}
	}
	return nil
}
