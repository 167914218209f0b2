package api

// The API's browser surface (docs/security.md): what a page on another
// site, or a browser signed in with a token that has since been revoked,
// can and cannot do.

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/auth"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestSignInRedirectStaysOnThisSite: after sign-in the browser goes only to
// a path on this host. Browsers drop TAB, CR and LF from a Location and
// read "\" as "/", so each of the refused forms below would otherwise be a
// link to evil.example.
func TestSignInRedirectStaysOnThisSite(t *testing.T) {
	t.Parallel()
	h := setup(t, true)
	for next, want := range map[string]string{
		"/builds?x=1":             "/builds?x=1",
		"/builds/7":               "/builds/7",
		"/":                       "/",
		"":                        "/",
		"/\t/evil.example":        "/",
		"/\r\n/evil.example":      "/",
		"\t//evil.example":        "/",
		"/\x00/evil.example":      "/",
		"/\u0085/evil.example":    "/", // C1 control (NEL)
		"//evil.example":          "/",
		"/\\evil.example":         "/",
		"\\\\evil.example":        "/",
		"https://evil.example/":   "/",
		"javascript:alert(1)":     "/",
		" //evil.example":         "/",
		"/bu\tilds":               "/builds",           // the control character goes, the path stays
		"/%09/evil.example":       "/%09/evil.example", // decoded once by the form; a browser keeps %09 in the path
		"/%2F%2Fevil.example":     "/%2F%2Fevil.example",
		"/%5Cevil.example/x?y=//": "/%5Cevil.example/x?y=//",
	} {
		_, _, resp := h.page("POST", "/login", "", url.Values{"token": {h.tok["read"]}, "next": {next}})
		if got := resp.Header.Get("Location"); got != want {
			t.Errorf("sign-in with next=%q redirects to %q, want %q", next, got, want)
		}
	}
}

// TestLoopbackModeRefusesOtherHostNames: without a tokens file, a page on
// evil.example that rebinds its name to 127.0.0.1 reaches the API as its
// own origin. Its requests name evil.example in Host and are refused on
// every route (finding 5 of issue 22 created a source, paused a queue and
// read Redis INFO this way); loopback names and addresses are served.
func TestLoopbackModeRefusesOtherHostNames(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	n := 0
	do := func(method, path, host string) (int, string) {
		t.Helper()
		var body io.Reader
		if method == "POST" && strings.HasPrefix(path, "/api/") {
			n++
			body = strings.NewReader(`{"name":"s-` + strconv.Itoa(n) + `","type":"git"}`)
		}
		req, _ := http.NewRequest(method, h.url+path, body)
		req.Host = host
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	port := h.url[strings.LastIndexByte(h.url, ':')+1:]
	routes := [][2]string{
		{"POST", "/api/v1/sources"},
		{"POST", "/dashboard/api/queues/builds:r:pause"},
		{"POST", "/dashboard/api/queues/builds:r:resume"},
		{"GET", "/dashboard/api/redis_info"},
		{"GET", "/api/v1/builds"},
		{"GET", "/"},
		{"GET", "/metrics"},
		{"GET", "/readyz"},
	}
	for _, host := range []string{"evil.example", "evil.example:" + port, "127.0.0.1.evil.example:" + port,
		"localhost.evil.example", "2130706433:" + port, "[::2]:" + port, "10.0.0.1:" + port} {
		for _, rt := range routes {
			code, body := do(rt[0], rt[1], host)
			if code != http.StatusMisdirectedRequest || !strings.Contains(body, "not a loopback name") {
				t.Errorf("%s %s with Host %q: %d %.200s, want 421", rt[0], rt[1], host, code, body)
			}
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "app.localhost:" + port,
		"[::1]:" + port, "[::1]", "127.1.2.3", "localhost.:" + port} {
		for _, rt := range routes {
			if code, body := do(rt[0], rt[1], host); code >= 400 {
				t.Errorf("%s %s with Host %q: %d %.200s, want it served", rt[0], rt[1], host, code, body)
			}
		}
	}
	// With tokens, any Host is served (probes send the pod's address);
	// the token is what protects.
	ht := setup(t, true)
	req, _ := http.NewRequest("GET", ht.url+"/readyz", nil)
	req.Host = "10.1.2.3:4242"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("readyz with tokens and the pod's address as Host: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
}

// TestDashboardRedisInfoNeedsAdmin: Redis INFO (version, config file,
// memory, clients) is the operator's; read and write tokens see the queues
// read-only and get 403 for it, an admin token reads it.
func TestDashboardRedisInfoNeedsAdmin(t *testing.T) {
	t.Parallel()
	h := setup(t, true)
	get := func(path, token string) int {
		t.Helper()
		r, _ := http.NewRequest("GET", h.url+path, nil)
		r.SetBasicAuth("x", token)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, scope := range []string{"read", "write"} {
		for _, p := range []string{"/dashboard/api/redis_info", "/dashboard/api/./redis_info"} {
			if code := get(p, h.tok[scope]); code != http.StatusForbidden {
				t.Errorf("%s token, GET %s: %d, want 403", scope, p, code)
			}
		}
		if code := get("/dashboard/api/queues", h.tok[scope]); code != 200 {
			t.Errorf("%s token, queue list: %d, want 200", scope, code)
		}
	}
	if code := get("/dashboard/api/redis_info", h.tok["admin"]); code != 200 {
		t.Errorf("admin token, Redis INFO: %d, want 200", code)
	}
}

// TestTokensFileIsReadAgainWithoutRestart: revoking a token is removing
// its line; adding one is adding a line. The running API follows the file
// within about a second.
func TestTokensFileIsReadAgainWithoutRestart(t *testing.T) {
	t.Parallel()
	h := setup(t, true)
	path := h.srv.Config.HTTP.TokensFile
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	added, line, err := auth.New("added", auth.Read, "")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := h.req("GET", "/api/v1/sources", "", added); code != 401 {
		t.Fatalf("a token not yet in the file: %d, want 401", code)
	}
	writeFileAtomic(t, path, string(before)+line+"\n")
	testenv.Eventually(t, 30*time.Second, "the added token accepted", func() bool {
		code, _ := h.req("GET", "/api/v1/sources", "", added)
		return code == 200
	})
	// Revoke the read token: remove its line.
	var kept []string
	for _, l := range strings.Split(string(before)+line, "\n") {
		if !strings.HasPrefix(l, "t-read ") {
			kept = append(kept, l)
		}
	}
	writeFileAtomic(t, path, strings.Join(kept, "\n")+"\n")
	testenv.Eventually(t, 30*time.Second, "the removed token refused", func() bool {
		code, _ := h.req("GET", "/api/v1/sources", "", h.tok["read"])
		return code == 401
	})
	if code, _ := h.req("GET", "/api/v1/sources", "", added); code != 200 {
		t.Errorf("the token left in the file: %d, want 200", code)
	}
}

// writeFileAtomic replaces a file as an editor or a Secret update does.
func writeFileAtomic(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".new", []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// TestSignInCookieIsASessionNotTheToken: the cookie holds a random session
// id kept in Redis (so every replica knows it), which holds neither the
// token nor the id itself; signing out ends it, and so does revoking its
// token in the tokens file.
func TestSignInCookieIsASessionNotTheToken(t *testing.T) {
	t.Parallel()
	h := setup(t, true)
	ctx := context.Background()
	view := func(cookie, path string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", h.url+path, nil)
		req.Header.Set("Accept", "text/html")
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The cookie: HttpOnly, Lax, and no token in it.
	_, _, resp := h.page("POST", "/login", "", url.Values{"token": {h.tok["write"]}, "next": {"/"}})
	var set *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			set = c
		}
	}
	if set == nil {
		t.Fatalf("sign-in set no %s cookie: %v", sessionCookie, resp.Header["Set-Cookie"])
	}
	if strings.Contains(set.Value, h.tok["write"]) || strings.Contains(h.tok["write"], set.Value) || len(set.Value) < 43 {
		t.Errorf("the cookie %q is not a 256-bit session id apart from the token", set.Value)
	}
	if !set.HttpOnly || set.SameSite != http.SameSiteLaxMode || set.Expires.IsZero() || set.Secure {
		t.Errorf("cookie attributes: %+v, want HttpOnly, SameSite=Lax, an expiry, and not Secure over http", set)
	}
	cleared := false
	for _, c := range resp.Cookies() {
		cleared = cleared || c.Name == legacyTokenCookie && c.MaxAge < 0
	}
	if !cleared {
		t.Errorf("sign-in does not delete the old %s cookie: %v", legacyTokenCookie, resp.Header["Set-Cookie"])
	}
	// Over TLS the cookie is Secure.
	tlsReq := httptest.NewRequest("POST", "https://127.0.0.1/login", strings.NewReader(url.Values{"token": {h.tok["read"]}}.Encode()))
	tlsReq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	tlsRec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(tlsRec, tlsReq)
	if c := tlsRec.Result().Cookies(); len(c) == 0 || c[0].Name != sessionCookie || !c[0].Secure {
		t.Errorf("sign-in over TLS: cookies %v, want %s first and Secure", c, sessionCookie)
	}
	write := set.Value
	if code := view(write, "/"); code != 200 {
		t.Fatalf("the page with the session: %d", code)
	}
	if code := view(write, "/dashboard/api/queues"); code != 200 {
		t.Errorf("the dashboard with the session: %d", code)
	}
	// The JSON API reads only Authorization, never the cookie.
	if code := view(write, "/api/v1/sources"); code != 401 {
		t.Errorf("the JSON API with the session cookie: %d, want 401", code)
	}
	// Redis holds neither the token nor the session id.
	keys, err := h.rdb.Keys(ctx, "pkgfleet:session:*").Result()
	if err != nil || len(keys) != 2 { // the write token's, and the read token's over TLS
		t.Fatalf("session keys: %v %v, want two", keys, err)
	}
	for _, k := range keys {
		v, _ := h.rdb.Get(ctx, k).Result()
		if ttl := h.rdb.TTL(ctx, k).Val(); ttl <= 0 || ttl > h.srv.Config.HTTP.SessionTimeout {
			t.Errorf("session %s expires in %s, want within HTTP.SessionTimeout", k, ttl)
		}
		if strings.Contains(k+v, h.tok["write"]) || strings.Contains(k+v, h.tok["read"]) || strings.Contains(k+v, write) {
			t.Errorf("Redis holds the token or the session id: %s = %s", k, v)
		}
	}
	// Another replica on the same Redis knows the session.
	other, err := NewServer(h.srv.Config, h.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://127.0.0.1/", nil)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: write})
	other.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Errorf("the session on another replica: %d, want 200", rec.Code)
	}
	// The raw token in the old cookie no longer signs anyone in.
	req = httptest.NewRequest("GET", "http://127.0.0.1/", nil)
	req.AddCookie(&http.Cookie{Name: legacyTokenCookie, Value: h.tok["admin"]})
	rec = httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Errorf("the raw token as the old cookie: %d, want 401", rec.Code)
	}

	// Sign-out ends the session, here and on every replica.
	read := h.signIn(h.tok["read"])
	_, body, _ := h.page("GET", "/", h.tok["read"], nil)
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no sign-out form on the page")
	}
	if code, _, _ := h.page("POST", "/logout", h.tok["read"], url.Values{"csrf": {m[1]}}); code != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", code)
	}
	for _, path := range []string{"/", "/dashboard/api/queues"} {
		if code := view(read, path); code != 401 {
			t.Errorf("GET %s after sign-out: %d, want 401", path, code)
		}
	}

	// Revoking the token (removing its line) ends its sessions.
	path := h.srv.Config.HTTP.TokensFile
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(before), "\n") {
		if !strings.HasPrefix(l, "t-write ") {
			kept = append(kept, l)
		}
	}
	writeFileAtomic(t, path, strings.Join(kept, "\n"))
	testenv.Eventually(t, 30*time.Second, "the revoked token's session refused", func() bool {
		return view(write, "/") == 401
	})
	if code := view(write, "/dashboard/api/queues"); code != 401 {
		t.Errorf("the dashboard with a revoked token's session: %d, want 401", code)
	}
	if n := len(h.rdb.Keys(ctx, "pkgfleet:session:*").Val()); n != 1 {
		t.Errorf("%d sessions left in Redis after sign-out and revocation, want 1 (the sign-in over TLS)", n)
	}
}

// TestTrustModelScopes is docs/security.md's trust model table: what no
// token, a read, a write and an admin token may reach, one route of each
// kind. A refused request is 401 (no valid token), 403 (too weak a scope)
// or 405 (asynqmon's read-only mode); an allowed one may still fail on its
// input (400, 404, 409).
func TestTrustModelScopes(t *testing.T) {
	t.Parallel()
	h := setup(t, true)
	scopes := []string{"", "read", "write", "admin"}
	for _, rt := range []struct {
		method, path string
		need         string // the weakest scope allowed; "" for none
	}{
		{"GET", "/healthz", ""},
		{"GET", "/readyz", ""},
		{"GET", "/metrics", ""},
		{"GET", "/api/v1/sources", "read"},
		{"GET", "/api/v1/builds", "read"},
		{"GET", "/api/v1/git-credentials", "read"},
		{"GET", "/", "read"},
		{"GET", "/dashboard/api/queues", "read"},
		{"POST", "/api/v1/sources", "write"},
		{"POST", "/api/v1/sources/s/git-builders/b/run", "write"},
		{"POST", "/api/v1/builds/1/cancel", "write"},
		{"POST", "/api/v1/git-credentials", "admin"},
		{"DELETE", "/api/v1/git-credentials/c", "admin"},
		{"POST", "/dashboard/api/queues/builds:r:pause", "admin"},
		{"GET", "/dashboard/api/redis_info", "admin"},
	} {
		allowed := false
		for _, scope := range scopes {
			allowed = allowed || scope == rt.need
			req, _ := http.NewRequest(rt.method, h.url+rt.path, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			if scope != "" {
				req.SetBasicAuth("x", h.tok[scope])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			refused := resp.StatusCode == 401 || resp.StatusCode == 403 || resp.StatusCode == 405
			if refused == allowed {
				t.Errorf("%s %s with %q token: %d, want it allowed=%v (needs %q)", rt.method, rt.path, scope, resp.StatusCode, allowed, rt.need)
			}
		}
	}
}
