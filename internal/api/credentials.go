package api

import (
	"fmt"
	"net/http"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/credential"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

func (s *Server) createCredential(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name       string `json:"name"`
		Type       string `json:"type"`
		Username   string `json:"username"`
		Password   string `json:"password"`
		PrivateKey string `json:"private_key"`
		Passphrase string `json:"passphrase"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	info, err := s.Creds.Create(r.Context(), &credential.Credential{
		Name: req.Name, Type: req.Type, Username: req.Username, Password: req.Password,
		PrivateKey: req.PrivateKey, Passphrase: req.Passphrase,
	})
	if err == credential.ErrNoKey {
		return errorf(http.StatusConflict, "%v", err)
	}
	if err != nil {
		return err
	}
	s.Log.Info("git credential created", "name", info.Name, "type", info.Type)
	writeJSON(w, http.StatusCreated, info)
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
	builders, err := s.Registry.Builders(r.Context(), "")
	if err != nil {
		return err
	}
	for _, b := range builders {
		if b.Credential == name {
			return fmt.Errorf("credential %q is used by git-builder %s: %w", name, b.Key(), registry.ErrConflict)
		}
	}
	if err := s.Creds.Delete(r.Context(), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
