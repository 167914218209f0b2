package api

// Outbound webhooks (internal/webhook): a write token sets where pkgfleet
// tells of a source's or a builder's finished builds, a read token lists
// them and their delivery logs. A hook's secret is taken, sealed and never
// given back; its URL is shown redacted (some receivers keep a secret in
// the path). What a write token gains is requests from the API to the
// URLs it names, which are held to the outbound policy (loopback,
// private and metadata addresses refused unless Git.AllowedHosts allows
// them, on every connection) and whose answers are never shown beyond
// their status: no way to read from inside the network.

import (
	"fmt"
	"net/http"
	"os"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/webhook"
)

// Dispatcher returns the outbound webhooks' dispatcher of this API
// replica; Run starts it, and only the leader of its lease delivers.
func (s *Server) Dispatcher() *webhook.Dispatcher {
	host, _ := os.Hostname()
	return &webhook.Dispatcher{Hooks: s.Hooks, Policy: s.Git.Net, PublicURL: s.Config.HTTP.PublicURL,
		Log: s.Log.With("component", "webhooks"), Owner: fmt.Sprintf("%s:%d", host, os.Getpid()),
		Counted: s.Metrics.OutboundWebhook}
}

func (s *Server) createHook(w http.ResponseWriter, r *http.Request) error {
	var in apiv1.NewHook
	if err := decode(r, &in); err != nil {
		return err
	}
	if err := validSecret("secret", in.Secret); err != nil {
		return err
	}
	if err := webhook.CheckURL(r.Context(), s.Git.Net, in.URL); err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	h, err := s.Hooks.Create(r.Context(), r.PathValue("source"), r.PathValue("name"), in)
	if err != nil {
		return err
	}
	s.Log.Info("outbound webhook created", "hook", h.ID, "source", h.Source, "git_builder", h.Builder, "url", h.URL, "token", r.Context().Value(tokenKey{}))
	writeJSON(w, http.StatusCreated, h)
	return nil
}

func (s *Server) listHooks(w http.ResponseWriter, r *http.Request) error {
	source, name := r.PathValue("source"), r.PathValue("name")
	var err error
	if name != "" {
		_, err = s.Registry.Builder(r.Context(), source, name)
	} else {
		_, err = s.Registry.Source(r.Context(), source)
	}
	if err != nil {
		return err
	}
	list, err := s.Hooks.List(r.Context(), source, name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Hooks{Hooks: list})
	return nil
}

// hookOf returns the hook the path names: {id} of {source}, and of
// builder {name} when the path has one.
func (s *Server) hookOf(r *http.Request) (apiv1.Hook, error) {
	h, err := s.Hooks.Get(r.Context(), r.PathValue("source"), r.PathValue("id"))
	if err == nil && r.PathValue("name") != "" && h.Builder != r.PathValue("name") {
		err = errorf(http.StatusNotFound, "hook %q is not a hook of git-builder %s", h.ID, r.PathValue("name"))
	}
	return h, err
}

func (s *Server) deleteHook(w http.ResponseWriter, r *http.Request) error {
	h, err := s.hookOf(r)
	if err != nil {
		return err
	}
	if err := s.Hooks.Delete(r.Context(), h.Source, h.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) hookDeliveries(w http.ResponseWriter, r *http.Request) error {
	h, err := s.hookOf(r)
	if err != nil {
		return err
	}
	list, err := s.Hooks.Deliveries(r.Context(), h.Source, h.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.HookDeliveries{Deliveries: list})
	return nil
}
