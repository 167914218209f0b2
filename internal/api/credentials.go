package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/credential"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

func (s *Server) createCredential(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name       string   `json:"name"`
		Type       string   `json:"type"`
		Hosts      []string `json:"hosts"`
		Username   string   `json:"username"`
		Password   string   `json:"password"`
		PrivateKey string   `json:"private_key"`
		Passphrase string   `json:"passphrase"`
		KnownHosts string   `json:"known_hosts"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	info, err := s.Creds.Create(r.Context(), &credential.Credential{
		Name: req.Name, Type: req.Type, Hosts: req.Hosts, Username: req.Username, Password: req.Password,
		PrivateKey: req.PrivateKey, Passphrase: req.Passphrase, KnownHosts: req.KnownHosts,
	})
	if err == credential.ErrNoKey {
		return errorf(http.StatusConflict, "%v", err)
	}
	if err != nil {
		return err
	}
	s.Log.Info("git credential created", "name", info.Name, "type", info.Type, "hosts", info.Hosts)
	writeJSON(w, http.StatusCreated, info)
	return nil
}

// editCredential sets where a credential may be sent (and, for ssh, the
// host keys its servers must show); its secrets are replaced only by
// deleting and creating it again. Hosts that would leave a git-builder
// using it with a URL they do not match are refused (409).
func (s *Server) editCredential(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Hosts      []string `json:"hosts"`
		KnownHosts *string  `json:"known_hosts"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	name := r.PathValue("name")
	info, err := s.Creds.Info(ctx, name)
	if err != nil {
		return err
	}
	if info.Hosts, err = credential.CanonicalHosts(info.Type, req.Hosts); err != nil {
		return err
	}
	if err := s.credentialUsers(ctx, name, func(b *registry.Builder) error {
		if err := credential.CheckURL(info, b.URL); err != nil {
			return fmt.Errorf("git-builder %s uses credential %q: %v: %w", b.Key(), name, err, registry.ErrConflict)
		}
		return nil
	}); err != nil {
		return err
	}
	info, err = s.Creds.SetHosts(ctx, name, req.Hosts, req.KnownHosts)
	if err != nil {
		return err
	}
	s.Log.Info("git credential hosts set", "name", info.Name, "hosts", info.Hosts)
	writeJSON(w, http.StatusOK, info)
	return nil
}

// credentialUsers calls fn for every git-builder that uses the credential
// name, and stops at its first error.
func (s *Server) credentialUsers(ctx context.Context, name string, fn func(*registry.Builder) error) error {
	builders, err := s.Registry.Builders(ctx, "")
	if err != nil {
		return err
	}
	for _, b := range builders {
		if b.Credential == name {
			if err := fn(b); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Server) listCredentials(w http.ResponseWriter, r *http.Request) error {
	list, err := s.Creds.List(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Credentials{Credentials: list})
	return nil
}

// deleteCredential refuses while a builder still uses the credential.
func (s *Server) deleteCredential(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := s.credentialUsers(r.Context(), name, func(b *registry.Builder) error {
		return fmt.Errorf("credential %q is used by git-builder %s: %w", name, b.Key(), registry.ErrConflict)
	}); err != nil {
		return err
	}
	if err := s.Creds.Delete(r.Context(), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// migrateCredentials binds credentials stored before they had hosts to
// the hosts of the git-builders that use them (see credential.Migrate).
func (s *Server) migrateCredentials(ctx context.Context) error {
	builders, err := s.Registry.Builders(ctx, "")
	if err != nil {
		return fmt.Errorf("migrate credentials: %w", err)
	}
	_, err = s.Creds.Migrate(ctx, builders, s.Log)
	return err
}
