// Package api is pkgfleet's HTTP API: JSON over /api/v1 for sources,
// git-builders and builds, bearer-token auth with scopes, and the health
// endpoints. It validates every request before anything is stored or
// queued, and answers errors as {"error": "..."} with the right status.
// For people it serves the builds page at / (pages.go, pages_view.go,
// templates in pages/): the same data and actions, as HTML, with the same
// token scopes.
//
// It does not build anything: it records builds and queues them through
// internal/queue.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/auth"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/credential"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/index"
	"github.com/pkgfleet/pkgfleet/internal/metrics"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/ratelimit"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
	"github.com/pkgfleet/pkgfleet/internal/webhook"
)

// Server holds what the handlers need.
type Server struct {
	Config   *config.Config
	Registry *registry.Registry
	Enqueuer *queue.Enqueuer
	Store    store.Artifacts
	Git      *git.Client
	Tokens   *auth.Tokens   // nil: no auth (loopback only)
	Sessions *auth.Sessions // the browser sign-ins; nil without Tokens
	Index    *index.Index   // the CRAN-like and PEP 503 package indexes
	Creds    *credential.Store
	Metrics  *metrics.API
	Writes   *ratelimit.Limiter // per-token limit on writes
	Hooks    *webhook.Store     // outbound webhooks
	Log      *slog.Logger

	pageKey pageKey // signs the builds page's CSRF tokens when there are no API tokens
	// remotes holds a token per git remote query an API request is making
	// (Git.RemoteConcurrency); nil: no cap.
	remotes chan struct{}
	// unreadable holds the keys of records a listing left out that were
	// logged, so each is said once per process, not on every listing.
	unreadable sync.Map
}

// CheckListen refuses a non-loopback address when there are no tokens.
func CheckListen(addr string, haveTokens bool) error {
	if haveTokens {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("HTTP.Listen %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("HTTP.Listen %q is not a loopback address and HTTP.TokensFile is not set: "+
		"anyone who can reach it could run builds. Set HTTP.TokensFile (see `pkgfleet-api token create`) or listen on 127.0.0.1", addr)
}

// isLoopbackHost says whether a request's Host (without its port) can only
// mean this machine to a browser: localhost, a name under .localhost
// (RFC 6761; browsers answer those themselves, never from DNS),
// 127.0.0.0/8 or ::1.
func isLoopbackHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackHost guards the loopback-only mode (no tokens) against DNS
// rebinding: a page on another site whose name the attacker re-points at
// 127.0.0.1 reaches this port as the same origin as the page, and without
// tokens nothing else stops it. Its requests carry the attacker's name in
// Host, so only loopback names and addresses are answered, on every
// route. With tokens a rebound page holds no credential (the sign-in
// cookie and basic auth belong to the name the browser signed in on), so
// any Host is served: the chart and compose always set a tokens file,
// and probes and scrapes there send the pod's address.
func (s *Server) loopbackHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Tokens == nil {
			host, _, err := net.SplitHostPort(r.Host)
			if err != nil {
				host = strings.TrimSuffix(strings.TrimPrefix(r.Host, "["), "]") // no port
			}
			if !isLoopbackHost(host) {
				writeError(w, http.StatusMisdirectedRequest, fmt.Sprintf("Host %q is not a loopback name or address: "+
					"without HTTP.TokensFile this API answers only requests to localhost, 127.0.0.1 or [::1] "+
					"(a page elsewhere could otherwise reach it through DNS rebinding)", r.Host))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.Metrics.Handler())
	}
	if err := s.dashboard(mux); err != nil {
		s.Log.Warn("queue dashboard disabled", "error", err)
	}

	route := func(pattern string, scope auth.Scope, h func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, s.authorize(scope, h))
	}
	route("POST /api/v1/sources", auth.Write, s.createSource)
	route("GET /api/v1/sources", auth.Read, s.listSources)
	route("GET /api/v1/sources/{source}", auth.Read, s.getSource)
	route("DELETE /api/v1/sources/{source}", auth.Write, s.deleteSource)
	route("POST /api/v1/sources/{source}/git-builders", auth.Write, s.createBuilder)
	route("GET /api/v1/sources/{source}/git-builders", auth.Read, s.listBuilders)
	route("GET /api/v1/sources/{source}/git-builders/{name}", auth.Read, s.getBuilder)
	route("PATCH /api/v1/sources/{source}/git-builders/{name}", auth.Write, s.editBuilder)
	route("DELETE /api/v1/sources/{source}/git-builders/{name}", auth.Write, s.deleteBuilder)
	route("POST /api/v1/sources/{source}/git-builders/{name}/run", auth.Write, s.runBuilder)
	route("POST /api/v1/sources/{source}/git-builders/{name}/rerun", auth.Write, s.rerunBuilder)
	route("POST /api/v1/git-credentials", auth.Admin, s.createCredential)
	route("GET /api/v1/git-credentials", auth.Read, s.listCredentials)
	route("PATCH /api/v1/git-credentials/{name}", auth.Admin, s.editCredential)
	route("DELETE /api/v1/git-credentials/{name}", auth.Admin, s.deleteCredential)
	route("GET /api/v1/builds", auth.Read, s.listBuilds)
	route("GET /api/v1/builds/{id}", auth.Read, s.getBuild)
	route("POST /api/v1/builds/{id}/cancel", auth.Write, s.cancelBuild)
	route("GET /api/v1/builds/{id}/log", auth.Read, s.buildLog)
	route("GET /api/v1/builds/{id}/artifacts/{file}", auth.Read, s.artifact)
	if s.Index != nil {
		wrap := func(h http.Handler) http.Handler { return h }
		if !s.Config.HTTP.PublicIndexes {
			wrap = func(h http.Handler) http.Handler {
				return s.authorize(auth.Read, func(w http.ResponseWriter, r *http.Request) error {
					h.ServeHTTP(w, r)
					return nil
				})
			}
		}
		s.Index.Routes(mux, wrap)
	}
	// Outbound webhooks (outhooks.go), of a source or of one builder.
	for _, base := range []string{"/api/v1/sources/{source}", "/api/v1/sources/{source}/git-builders/{name}"} {
		route("POST "+base+"/hooks", auth.Write, s.createHook)
		route("GET "+base+"/hooks", auth.Read, s.listHooks)
		route("DELETE "+base+"/hooks/{id}", auth.Write, s.deleteHook)
		route("GET "+base+"/hooks/{id}/deliveries", auth.Read, s.hookDeliveries)
	}
	// Badges are seen by whoever may see the indexes (badges.go).
	mux.HandleFunc("GET /badges/{source}/{file}", s.badge)
	route("GET /api/v1/workers", auth.Read, s.listWorkers)
	route("GET /api/v1/namespaces", auth.Read, s.namespaces)
	// Webhooks carry their builder's secret instead of an API token.
	for provider := range webhookProviders {
		mux.Handle("POST "+webhookPrefix+provider+"/{source}/{name}", s.public(s.webhook(provider)))
		mux.Handle("POST "+webhookPrefix+provider, s.public(legacyWebhook(provider)))
	}
	s.pageRoutes(mux) // the builds page at /
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if wantsHTML(r) {
			s.errorPage(w, r, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return s.loopbackHost(s.limitBody(sameOrigin(mux)))
}

// sameOrigin refuses state-changing requests that a browser sends on
// behalf of another site (CSRF): a page elsewhere must not be able to
// run, cancel or delete through a signed-in browser's cookie, nor through
// a loopback API that has no tokens. Requests without the browser's
// Sec-Fetch-Site and Origin headers (the CLI, curl, webhooks) pass.
func sameOrigin(h http.Handler) http.Handler {
	c := http.NewCrossOriginProtection()
	c.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused: "+r.Method+" "+r.URL.Path+" must come from this server's own pages, the CLI or another non-browser client")
	}))
	return c.Handler(h)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.Registry.Ping(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "redis is not reachable")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// limitBody caps every request body: webhooks at HTTP.WebhookMaxBodySize
// (they are streamed through their signature check, never held), the rest
// at HTTP.MaxBodySize.
func (s *Server) limitBody(next http.Handler) http.Handler {
	limit, hookLimit := int64(s.Config.HTTP.MaxBodySize), int64(s.Config.HTTP.WebhookMaxBodySize)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l := limit
		if strings.HasPrefix(r.URL.Path, webhookPrefix) {
			l = hookLimit
		}
		if r.Body != nil && l > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, l)
		}
		next.ServeHTTP(w, r)
	})
}

type tokenKey struct{}

// authorize checks the bearer token's scope, then runs h and maps its
// error to a status code.
func (s *Server) authorize(need auth.Scope, h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "" // the token's name; "" without tokens
		if s.Tokens != nil {
			secret, ok := bearer(r)
			tok, valid := s.Tokens.Check(strings.TrimSpace(secret))
			if !ok || !valid {
				w.Header().Set("WWW-Authenticate", `Bearer realm="pkgfleet"`)
				writeError(w, http.StatusUnauthorized, "a valid API token is required (Authorization: Bearer TOKEN)")
				return
			}
			if tok.Scope < need {
				writeError(w, http.StatusForbidden, fmt.Sprintf("token %q has scope %s; this needs %s", tok.Name, tok.Scope, need))
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), tokenKey{}, tok.Name))
			who = tok.Name
		}
		if err := s.limitWrite(w, r, who); err != nil {
			s.fail(w, r, err)
			return
		}
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	})
}

// public runs h without token auth and maps its error to a status code.
func (s *Server) public(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	})
}

// bearer returns the request's token: a bearer token, or the password of
// basic auth, which is what pip and R can send (https://x:TOKEN@host/…).
func bearer(r *http.Request) (string, bool) {
	if secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return secret, true
	}
	if _, password, ok := r.BasicAuth(); ok {
		return password, true
	}
	return "", false
}

// httpError is an error with a status and a message safe to show.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if redisconn.Transient(err) {
		// Redis is failing over or out of reach: the CLI asks again.
		w.Header().Set("Retry-After", "1")
	}
	if status, msg := s.statusOf(r, err); status != 0 {
		writeError(w, status, msg)
	}
}

// statusOf maps a handler's error to a status and a message safe to show
// (0 when the client went away), logging what is not the user's fault.
func (s *Server) statusOf(r *http.Request, err error) (int, string) {
	var he *httpError
	var ve *registry.ValidationError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		return he.status, he.msg
	case errors.As(err, &ve):
		return http.StatusBadRequest, ve.Msg
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, registry.ErrExists), errors.Is(err, registry.ErrConflict):
		return http.StatusConflict, err.Error()
	case errors.Is(err, queue.ErrStillStopping):
		return http.StatusServiceUnavailable, err.Error()
	case errors.Is(err, context.Canceled):
		return 0, "" // the client went away
	case redisconn.Transient(err):
		s.Log.Warn("request failed while Redis was unavailable; the client may ask again", "method", r.Method, "path", r.URL.Path, "error", err)
		return http.StatusServiceUnavailable, "Redis is unavailable or failing over; try again"
	default:
		s.Log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		return http.StatusInternalServerError, "internal error; see the server log"
	}
}

// decode reads one JSON object, rejecting unknown fields and trailing data.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return err
		case errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, "request body is empty; send a JSON object")
		case errors.As(err, &se):
			return errorf(http.StatusBadRequest, "malformed JSON at byte %d", se.Offset)
		case errors.As(err, &te):
			return errorf(http.StatusBadRequest, "field %q must be %s", te.Field, te.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return errorf(http.StatusBadRequest, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		default:
			return errorf(http.StatusBadRequest, "malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "request body must hold one JSON object")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiv1.Error{Error: msg})
}
