package api

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/auth"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

type harness struct {
	t   *testing.T
	srv *Server
	url string
	rdb *redis.Client
	tok map[string]string // scope → token

	sessions map[string]string // token → its sign-in's session id (signIn)
}

// setup starts an API; settings override its environment.
func setup(t *testing.T, withTokens bool, settings ...map[string]string) *harness {
	t.Helper()
	// The tests' remotes are on loopback, which the outbound policy
	// refuses unless allowed (netpolicy_test.go tests the default).
	env := testenv.AllowLoopback(map[string]string{})
	for _, m := range settings {
		maps.Copy(env, m)
	}
	return setupWith(t, withTokens, env)
}

// setupWith is setup with more settings.
func setupWith(t *testing.T, withTokens bool, settings map[string]string) *harness {
	t.Helper()
	rdb, _ := redisServer.DB(t)
	dir := t.TempDir()
	env := map[string]string{
		"PKGFLEET_SERVER_DATADIR":    dir,
		"PKGFLEET_GIT_ALLOWFILEURLS": "false",
		"PKGFLEET_HTTP_MAXBODYSIZE":  "4KiB",
	}
	maps.Copy(env, settings)
	h := &harness{t: t, rdb: rdb, tok: map[string]string{}}
	if withTokens {
		var lines []string
		for _, sc := range []auth.Scope{auth.Read, auth.Write, auth.Admin} {
			tok, line, err := auth.New("t-"+sc.String(), sc, "")
			if err != nil {
				t.Fatal(err)
			}
			h.tok[sc.String()] = tok
			lines = append(lines, line)
		}
		_, expLine, _ := auth.New("expired", auth.Admin, "2020-01-01")
		lines = append(lines, expLine)
		p := filepath.Join(dir, "tokens")
		os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
		env["PKGFLEET_HTTP_TOKENSFILE"] = p
	}
	cfg := testenv.Config(t, env)
	s, err := NewServer(cfg, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	h.url, h.srv = hs.URL, s
	return h
}

func (h *harness) req(method, path, body, token string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			h.t.Errorf("%s %s: error body %q is not {\"error\": ...}", method, path, b)
		}
		return resp.StatusCode, e.Error
	}
	return resp.StatusCode, string(b)
}

// keys counts what pkgfleet and asynq stored.
func (h *harness) keys() []string {
	keys, _ := h.rdb.Keys(context.Background(), "*").Result()
	return keys
}

func TestHostileRequestsAre4xxAndStoreNothing(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	if code, body := h.req("POST", "/api/v1/sources", `{"name":"src","type":"git"}`, ""); code != 201 {
		t.Fatalf("create source: %d %s", code, body)
	}
	before := len(h.keys())
	big := `{"name":"` + strings.Repeat("a", 5000) + `","type":"git"}`
	cases := []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"malformed json", "POST", "/api/v1/sources", `{"name":`, 400, "malformed JSON"},
		{"unknown field", "POST", "/api/v1/sources", `{"name":"x","type":"git","evil":1}`, 400, `unknown field "evil"`},
		{"two objects", "POST", "/api/v1/sources", `{"name":"x","type":"git"}{}`, 400, "one JSON object"},
		{"wrong type", "POST", "/api/v1/sources", `{"name":5,"type":"git"}`, 400, `"name"`},
		{"empty body", "POST", "/api/v1/sources", ``, 400, "empty"},
		{"oversized", "POST", "/api/v1/sources", big, 413, "larger than"},
		{"path traversal name", "POST", "/api/v1/sources", `{"name":"../etc","type":"git"}`, 400, "may contain only"},
		{"bad type", "POST", "/api/v1/sources", `{"name":"x","type":"cran"}`, 400, "not supported"},
		{"ext url", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"ext::sh -c id"}`, 400, ""},
		{"fd url", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"fd::3"}`, 400, "transport helper"},
		{"dash url", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"--upload-pack=touch /tmp/x"}`, 400, "'-'"},
		{"proxycommand", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"ssh://-oProxyCommand=x/y"}`, 400, "'-'"},
		{"newline url", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://h/x\ny"}`, 400, "control"},
		{"nul url", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://h/x\u0000y"}`, 400, "control"},
		{"file url not allowed", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"file:///srv/r"}`, 400, "Git.AllowFileURLs"},
		{"token in url", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://x:secret@h/r"}`, 400, "credential"},
		{"dash branch", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://h/r","branch":"-x"}`, 400, "'-'"},
		{"sub_dir traversal", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://h/r","sub_dir":"a/../../x"}`, 400, "'..'"},
		{"builder name traversal", "POST", "/api/v1/sources/src/git-builders", `{"name":"../b","url":"https://h/r"}`, 400, "may contain only"},
		{"unknown source", "POST", "/api/v1/sources/nope/git-builders", `{"name":"b","url":"https://h/r"}`, 404, "not found"},
		{"bad poll interval", "POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://h/r","poll_interval":"soon"}`, 400, "duration"},
		{"rerun nothing", "POST", "/api/v1/sources/src/git-builders/b/rerun", `{}`, 400, "exactly one"},
		{"rerun bad sha", "POST", "/api/v1/sources/src/git-builders/b/rerun", `{"commit_sha":"--all"}`, 400, "sha"},
		{"bad build id", "GET", "/api/v1/builds/abc", ``, 400, "positive number"},
		{"missing build", "GET", "/api/v1/builds/42", ``, 404, "not found"},
		{"bad status filter", "GET", "/api/v1/builds?status=done", ``, 400, "not one of"},
		{"no such endpoint", "GET", "/api/v2/x", ``, 404, "no such endpoint"},
		{"wrong content type", "POST", "/api/v1/sources", `name=x`, 400, ""},
	}
	for _, tc := range cases {
		code, body := h.req(tc.method, tc.path, tc.body, "")
		if tc.name == "wrong content type" {
			req, _ := http.NewRequest("POST", h.url+"/api/v1/sources", strings.NewReader("name=x"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, _ := http.DefaultClient.Do(req)
			code = resp.StatusCode
			resp.Body.Close()
			tc.code = 415
		}
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %d containing %q", tc.name, code, body, tc.code, tc.want)
		}
	}
	if after := h.keys(); len(after) != before {
		t.Fatalf("hostile requests stored something: keys %v", after)
	}
}

// A Git remote that does not answer is a 502, whether the API asked it
// for a run or for an R builder's name; nothing is stored or queued.
func TestUnreachableRemoteIs502AndStoresNothing(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	h.req("POST", "/api/v1/sources", `{"name":"src","type":"git"}`, "")
	before := len(h.keys())
	code, body := h.req("POST", "/api/v1/sources/src/git-builders", `{"url":"https://127.0.0.1:1/none.git"}`, "")
	if code != 502 || !strings.Contains(body, "could not connect to the remote") {
		t.Fatalf("create without a name: %d %s, want 502 saying it could not connect", code, body)
	}
	if after := h.keys(); len(after) != before {
		t.Fatalf("a builder that could not be named stored something: %v", after)
	}
	if code, body := h.req("POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://127.0.0.1:1/none.git"}`, ""); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	code, body = h.req("POST", "/api/v1/sources/src/git-builders/b/run", `{}`, "")
	if code != 502 || !strings.Contains(body, "ls-remote") {
		t.Fatalf("run: %d %s, want 502 naming ls-remote", code, body)
	}
	for _, k := range h.keys() {
		if strings.HasPrefix(k, "asynq:") || strings.HasPrefix(k, "pkgfleet:build:") || strings.HasPrefix(k, "pkgfleet:builds") {
			t.Fatalf("something was queued or recorded: %s", k)
		}
	}
}

func TestTokensAndScopes(t *testing.T) {
	t.Parallel()
	h := setup(t, true)
	if code, _ := h.req("GET", "/api/v1/sources", "", ""); code != 401 {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _ := h.req("GET", "/api/v1/sources", "", "pkf_wrong"); code != 401 {
		t.Errorf("unknown token: %d, want 401", code)
	}
	if code, _ := h.req("GET", "/api/v1/sources", "", h.tok["read"]); code != 200 {
		t.Errorf("read token reading: %d", code)
	}
	code, body := h.req("POST", "/api/v1/sources", `{"name":"s","type":"git"}`, h.tok["read"])
	if code != 403 || !strings.Contains(body, "needs write") {
		t.Errorf("read token writing: %d %s, want 403", code, body)
	}
	if strings.Contains(body, h.tok["read"]) {
		t.Error("the token was echoed in an error")
	}
	if code, _ := h.req("POST", "/api/v1/sources", `{"name":"s","type":"git"}`, h.tok["write"]); code != 201 {
		t.Errorf("write token writing: %d", code)
	}
	if code, _ := h.req("GET", "/healthz", "", ""); code != 200 {
		t.Errorf("healthz needs no token: %d", code)
	}
	if code, _ := h.req("GET", "/readyz", "", ""); code != 200 {
		t.Errorf("readyz: %d", code)
	}
}

func TestExpiredTokenIsRefused(t *testing.T) {
	t.Parallel()
	tok, line, err := auth.New("old", auth.Admin, "2020-01-01")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(p, []byte("# comment\n"+line+"\n"), 0o600)
	tokens, err := auth.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tokens.Check(tok); ok {
		t.Fatal("an expired token was accepted")
	}
	os.WriteFile(p, []byte("name admin "+tok+"\n"), 0o600)
	if _, err := auth.Load(p); err == nil || strings.Contains(err.Error(), tok) {
		t.Fatalf("a plaintext token line: %v (must be refused without echoing it)", err)
	}
}

func TestNoTokensMeansLoopbackOnly(t *testing.T) {
	t.Parallel()
	for addr, ok := range map[string]bool{"127.0.0.1:4242": true, "[::1]:4242": true, "localhost:1": true, ":4242": false, "0.0.0.0:4242": false, "10.0.0.1:80": false} {
		if err := CheckListen(addr, false); (err == nil) != ok {
			t.Errorf("CheckListen(%q) = %v", addr, err)
		}
	}
	if err := CheckListen(":4242", true); err != nil {
		t.Errorf("with tokens: %v", err)
	}
}

func TestDashboardNeedsATokenAndReadIsReadOnly(t *testing.T) {
	t.Parallel()
	h := setup(t, true)
	if code, _ := h.req("GET", "/dashboard/", "", ""); code != 401 {
		t.Errorf("dashboard without a token: %d, want 401", code)
	}
	req := func(method, path, token string) int {
		r, _ := http.NewRequest(method, h.url+path, nil)
		r.SetBasicAuth("x", token) // what a browser sends
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := req("GET", "/dashboard/", h.tok["read"]); code != 200 {
		t.Errorf("read token, dashboard page: %d", code)
	}
	if code := req("GET", "/dashboard/api/queues", h.tok["read"]); code != 200 {
		t.Errorf("read token, queue list: %d", code)
	}
	if code := req("POST", "/dashboard/api/queues/builds:r:pause", h.tok["read"]); code < 400 {
		t.Errorf("read token paused a queue: %d", code)
	}
	if code := req("POST", "/dashboard/api/queues/builds:r:pause", h.tok["admin"]); code >= 400 {
		t.Errorf("admin token could not pause a queue: %d", code)
	}
}

func TestABrowserOnAnotherSiteCannotChangeAnything(t *testing.T) {
	t.Parallel()
	h := setup(t, true)
	req := func(method, path, site string) int {
		r, _ := http.NewRequest(method, h.url+path, nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: h.signIn(h.tok["admin"])}) // a signed-in browser
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/dashboard/api/queues/builds:r:pause", "/api/v1/builds/1/cancel"} {
		if code := req("POST", path, "cross-site"); code != http.StatusForbidden {
			t.Errorf("a cross-site POST %s: %d, want 403", path, code)
		}
	}
	if code := req("POST", "/dashboard/api/queues/builds:r:pause", "same-origin"); code >= 400 {
		t.Errorf("the dashboard's own POST: %d", code)
	}
	if code := req("GET", "/dashboard/api/queues", "cross-site"); code != 200 {
		t.Errorf("a cross-site GET (a link): %d, want 200", code)
	}
}
