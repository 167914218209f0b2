package api

// The builds page: server-rendered HTML at / for people, beside the JSON
// API for programs. It reads what the API reads (registry, roster,
// poller) and acts through the same functions as the API's run, rerun and
// cancel; it owns only the rendering, the sign-in cookie and the
// protection of its forms against cross-site requests.

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"unicode"

	"github.com/pkgfleet/pkgfleet/internal/auth"
)

//go:embed pages
var pageFiles embed.FS

// pageTemplates holds one template set per page, each with the layout.
var pageTemplates = func() map[string]*template.Template {
	sets := map[string]*template.Template{}
	for _, name := range []string{"index", "build", "login", "error"} {
		sets[name] = template.Must(template.New(name).Funcs(pageFuncs).
			ParseFS(pageFiles, "pages/layout.html", "pages/"+name+".html"))
	}
	return sets
}()

// sessionCookie carries a signed-in browser's session id (auth.Sessions),
// never its token; the queue dashboard reads the same cookie.
const sessionCookie = "pkgfleet_session"

// legacyTokenCookie is where older versions kept the raw token. It is no
// longer read, and sign-in and sign-out delete it from the browser.
const legacyTokenCookie = "pkgfleet_token"

// session is who is looking at the page.
type session struct {
	Who     string     // the token's name; "" without tokens
	Scope   auth.Scope // what they may do
	CSRF    string     // the value every form must send back
	Cookie  bool       // signed in with the cookie (so sign-out means something)
	NoAuth  bool       // the API has no tokens (loopback only)
	CanEdit bool       // write scope: run, rerun, cancel buttons

	sessionID string // the cookie's; unexported, so no template can show it
}

// pageKey signs CSRF values when the API has no tokens to derive them from.
type pageKey struct {
	once sync.Once
	key  []byte
}

func (k *pageKey) get() []byte {
	k.once.Do(func() {
		k.key = make([]byte, 32)
		_, _ = rand.Read(k.key)
	})
	return k.key
}

// csrfFor is the form value bound to a credential: a cross-site page
// cannot compute it without the token itself.
func csrfFor(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("pkgfleet builds page form"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// session reads the request's credential: a bearer token, basic auth's
// password or the sign-in cookie's session. problem says why a given one
// was refused.
func (s *Server) session(r *http.Request) (sess *session, problem string) {
	if s.Tokens == nil {
		return &session{Scope: auth.Admin, CSRF: csrfFor(s.pageKey.get()), NoAuth: true, CanEdit: true}, ""
	}
	secret, _ := bearer(r)
	if secret = strings.TrimSpace(secret); secret != "" {
		tok, ok := s.Tokens.Check(secret)
		if !ok {
			return nil, "That token is not valid, or it has expired."
		}
		return newSession(tok, secret, ""), ""
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, ""
	}
	tok, ok, err := s.Sessions.Get(r.Context(), c.Value)
	if err != nil {
		s.Log.Error("sign-in could not be checked", "error", err)
		return nil, "Your sign-in could not be checked just now; try again."
	}
	if !ok {
		return nil, "Your sign-in has ended (signed out, expired, or its token was revoked); sign in again."
	}
	return newSession(tok, c.Value, c.Value), ""
}

// newSession is tok's view of the page. The forms' CSRF value is bound to
// the credential the browser sent: the token, or the session id.
func newSession(tok auth.Token, credential, sessionID string) *session {
	return &session{Who: tok.Name, Scope: tok.Scope, CSRF: csrfFor([]byte(credential)), Cookie: sessionID != "",
		CanEdit: tok.Scope >= auth.Write, sessionID: sessionID}
}

// page wraps a page handler: it signs the visitor in, checks the scope,
// refuses forms from other sites, and shows errors as a page.
func (s *Server) page(need auth.Scope, h func(w http.ResponseWriter, r *http.Request, sess *session) error) http.Handler {
	origin := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, problem := s.session(r)
		if sess == nil {
			s.loginPage(w, r, http.StatusUnauthorized, problem)
			return
		}
		if sess.Scope < need {
			s.errorPage(w, r, http.StatusForbidden, fmt.Sprintf("Token %q has scope %s; this needs a %s token.", sess.Who, sess.Scope, need))
			return
		}
		if r.Method == http.MethodPost {
			if origin.Check(r) != nil || !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(sess.CSRF)) {
				s.errorPage(w, r, http.StatusForbidden, "This form came from another site or an old page; reload the page and try again.")
				return
			}
		}
		if err := s.limitWrite(w, r, sess.Who); err != nil {
			if status, msg := s.statusOf(r, err); status != 0 {
				s.errorPage(w, r, status, msg)
			}
			return
		}
		if err := h(w, r, sess); err != nil {
			if status, msg := s.statusOf(r, err); status != 0 {
				s.errorPage(w, r, status, msg)
			}
		}
	})
}

func (s *Server) pageRoutes(mux *http.ServeMux) {
	mux.Handle("GET /{$}", s.page(auth.Read, s.indexPage))
	mux.Handle("GET /builds/{id}", s.page(auth.Read, s.buildPage))
	mux.Handle("GET /builds/{id}/log", s.page(auth.Read, func(w http.ResponseWriter, r *http.Request, _ *session) error {
		return s.buildLog(w, r)
	}))
	mux.Handle("GET /builds/{id}/artifacts/{file}", s.page(auth.Read, func(w http.ResponseWriter, r *http.Request, _ *session) error {
		return s.artifact(w, r)
	}))
	mux.Handle("POST /builds/{id}/rerun", s.page(auth.Write, s.rerunFromPage))
	mux.Handle("POST /builds/{id}/cancel", s.page(auth.Write, s.cancelFromPage))
	mux.Handle("POST /git-builders/{source}/{name}/run", s.page(auth.Write, s.runFromPage))
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) { s.loginPage(w, r, http.StatusOK, "") })
	mux.HandleFunc("POST /login", s.login)
	mux.Handle("POST /logout", s.page(auth.Read, s.logout))
	mux.Handle("GET /assets/", http.FileServerFS(mustSub(pageFiles, "pages")))
}

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

// render writes a page; a template error is the server's bug, shown as a
// plain error page and logged.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var buf bytes.Buffer
	if err := pageTemplates[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		s.Log.Error("page failed", "page", name, "path", r.URL.Path, "error", err)
		status = http.StatusInternalServerError
		buf.Reset()
		_ = pageTemplates["error"].ExecuteTemplate(&buf, "layout", errorView{Status: status,
			Title: http.StatusText(status), Message: "internal error; see the server log"})
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// Only this server's own script and style; nothing from elsewhere.
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type errorView struct {
	Session *session
	Status  int
	Title   string
	Message string
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	sess, _ := s.session(r)
	s.render(w, r, status, "error", errorView{Session: sess, Status: status, Title: http.StatusText(status), Message: msg})
}

// wantsHTML tells a browser from an API client.
func wantsHTML(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		strings.Contains(r.Header.Get("Accept"), "text/html") && !strings.HasPrefix(r.URL.Path, "/api/")
}

type loginView struct {
	Session *session
	Problem string
	Next    string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request, status int, problem string) {
	if s.Tokens == nil && r.URL.Path == "/login" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	next := r.URL.Query().Get("next")
	if r.URL.Path != "/login" {
		next = "/" // a form's target cannot be opened after sign-in
		if r.Method == http.MethodGet {
			next = r.URL.RequestURI()
		}
	}
	s.render(w, r, status, "login", loginView{Problem: problem, Next: safeNext(next)})
}

// safeNext keeps a redirect after sign-in on this site: a path that
// starts with one "/" followed by neither "/" nor "\", else "/". Control
// characters go first, because browsers drop TAB, CR and LF from a
// Location before reading it: "/\t/evil.example" is "//evil.example", a
// link to another host. next arrives decoded once (query or form); what is
// still percent-encoded stays so, and a browser resolves "/%2F/x" as a
// path on this host without decoding it.
func safeNext(next string) string {
	next = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, next)
	if len(next) < 2 || next[0] != '/' || next[1] == '/' || next[1] == '\\' {
		return "/"
	}
	return next
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if err := http.NewCrossOriginProtection().Check(r); err != nil {
		s.errorPage(w, r, http.StatusForbidden, "This sign-in form came from another site.")
		return
	}
	if s.Tokens == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	secret := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	tok, ok := s.Tokens.Check(secret)
	if !ok {
		s.render(w, r, http.StatusUnauthorized, "login", loginView{Problem: "That token is not valid, or it has expired.", Next: next})
		return
	}
	id, expires, err := s.Sessions.Create(r.Context(), tok)
	if err != nil {
		s.Log.Error("sign-in failed", "token", tok.Name, "error", err)
		s.render(w, r, http.StatusServiceUnavailable, "login", loginView{Problem: "Signing in failed on the server; try again.", Next: next})
		return
	}
	// Lax: a link from elsewhere opens the page signed in, while forms and
	// scripts from elsewhere go without the cookie.
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteLaxMode, Expires: expires,
	})
	clearCookie(w, legacyTokenCookie)
	s.Log.Info("signed in to the builds page", "token", tok.Name)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) error {
	if sess.sessionID != "" {
		if err := s.Sessions.Delete(r.Context(), sess.sessionID); err != nil {
			return err
		}
	}
	clearCookie(w, sessionCookie)
	clearCookie(w, legacyTokenCookie)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
	return nil
}

// clearCookie tells the browser to drop a cookie.
func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}
