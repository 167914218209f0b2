package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// credentialFleet is an API with tokens and a credential key, whose git
// trusts srv's test CA, with an admin's credential "ci" bound to srv's
// host and port, and a source "private".
func credentialFleet(t *testing.T, srv *testenv.GitTLS, user, secret string) (h *harness, host string) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "credential.key")
	os.WriteFile(keyFile, []byte(strings.Repeat("k", 40)), 0o600)
	h = setup(t, true, map[string]string{"PKGFLEET_GIT_CREDENTIALKEYFILE": keyFile})
	h.srv.Git.Env = srv.Env
	host = srv.URL // https://127.0.0.1:<port>, already canonical
	body := fmt.Sprintf(`{"name":"ci","type":"https","hosts":[%q],"username":%q,"password":%q}`, srv.URL, user, secret)
	if code, out := h.req("POST", "/api/v1/git-credentials", body, h.tok["admin"]); code != 201 || strings.Contains(out, secret) || !strings.Contains(out, `"`+host+`"`) {
		t.Fatalf("create credential: %d %s", code, out)
	}
	if code, out := h.req("POST", "/api/v1/sources", `{"name":"private","type":"git"}`, h.tok["write"]); code != 201 {
		t.Fatalf("create source: %d %s", code, out)
	}
	return h, host
}

// A write token may use an admin's credential, but only where the admin
// bound it: a builder (created or edited) whose URL names another host,
// port or scheme is refused with the rule, before git runs.
func TestWriteTokenCannotAimAStoredCredentialAtAnotherHost(t *testing.T) {
	t.Parallel()
	const user, secret = "bot", "tok-url-theft-0123456789"
	srv := testenv.NewGitTLS(t, user, secret)
	h, host := credentialFleet(t, srv, user, secret)
	w := h.tok["write"]
	rule := `credential "ci" may be sent only to ` + host + `; the url names `
	sameHostByName := strings.Replace(host, "127.0.0.1", "localhost", 1)
	for url, names := range map[string]string{
		"https://evil.example/x.git": "https://evil.example:443",
		srv.OtherURL + "/repo.git":   srv.OtherURL,
		sameHostByName + "/repo.git": sameHostByName,
	} {
		code, out := h.req("POST", "/api/v1/sources/private/git-builders", fmt.Sprintf(`{"name":"b","url":%q,"credential":"ci"}`, url), w)
		h.req("DELETE", "/api/v1/sources/private/git-builders/b", "", w) // had it been accepted
		if code != 400 || !strings.Contains(out, rule+names) {
			t.Errorf("builder at %s with the credential: %d %q, want 400 naming %q", url, code, out, rule+names)
		}
	}
	ok := fmt.Sprintf(`{"name":"ok","url":%q,"credential":"ci"}`, srv.URL+"/repo.git")
	if code, out := h.req("POST", "/api/v1/sources/private/git-builders", ok, w); code != 201 {
		t.Fatalf("builder on the credential's host: %d %s", code, out)
	}
	// Editing the URL, or adding the credential to a builder elsewhere.
	if code, out := h.req("PATCH", "/api/v1/sources/private/git-builders/ok", `{"url":"https://evil.example/x.git"}`, w); code != 400 || !strings.Contains(out, rule) {
		t.Errorf("edit the URL away: %d %s", code, out)
	}
	if code, out := h.req("POST", "/api/v1/sources/private/git-builders", `{"name":"pub","url":"https://evil.example/x.git"}`, w); code != 201 {
		t.Fatalf("builder without a credential: %d %s", code, out)
	}
	if code, out := h.req("PATCH", "/api/v1/sources/private/git-builders/pub", `{"credential":"ci"}`, w); code != 400 || !strings.Contains(out, rule) {
		t.Errorf("add the credential to a builder elsewhere: %d %s", code, out)
	}
	// Only an admin creates, re-binds or deletes credentials.
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/api/v1/git-credentials", `{"name":"mine","type":"https","hosts":["evil.example"],"username":"u","password":"p"}`},
		{"PATCH", "/api/v1/git-credentials/ci", `{"hosts":["evil.example"]}`},
		{"DELETE", "/api/v1/git-credentials/ci", ``},
	} {
		if code, out := h.req(r.method, r.path, r.body, w); code != 403 {
			t.Errorf("write token %s %s: %d %s", r.method, r.path, code, out)
		}
	}
	// A new credential needs hosts; hosts that would strand a builder are refused.
	if code, out := h.req("POST", "/api/v1/git-credentials", `{"name":"x","type":"https","username":"u","password":"p"}`, h.tok["admin"]); code != 400 || !strings.Contains(out, "hosts is required") {
		t.Errorf("credential without hosts: %d %s", code, out)
	}
	if code, out := h.req("PATCH", "/api/v1/git-credentials/ci", `{"hosts":["https://evil.example"]}`, h.tok["admin"]); code != 409 || !strings.Contains(out, "git-builder private/ok") {
		t.Errorf("re-binding away from a builder that uses it: %d %s", code, out)
	}
	rebind := fmt.Sprintf(`{"hosts":[%q,"*.Example.ORG:8443"]}`, srv.URL)
	if code, out := h.req("PATCH", "/api/v1/git-credentials/ci", rebind, h.tok["admin"]); code != 200 || !strings.Contains(out, `"https://*.example.org:8443"`) {
		t.Errorf("re-binding that keeps its builders' hosts: %d %s", code, out)
	}
	code, out := h.req("GET", "/api/v1/git-credentials", "", h.tok["read"])
	if code != 200 || !strings.Contains(out, `"`+host+`"`) || strings.Contains(out, secret) {
		t.Errorf("listing: %d %s", code, out)
	}
}

// A redirect from the credential's host to another port or host, before
// or after it authenticated, never carries the credential there, while
// the credential's own host still authenticates.
func TestRedirectFromTheCredentialsHostDoesNotCarryItAway(t *testing.T) {
	t.Parallel()
	const user, secret = "bot", "tok-redirect-theft-0123456789"
	srv := testenv.NewGitTLS(t, user, secret)
	work, _ := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: ok\nVersion: 1.0\n"})
	testenv.Git(t, srv.Root, "clone", "--quiet", "--bare", work, "repo.git")
	h, _ := credentialFleet(t, srv, user, secret)
	w := h.tok["write"]
	for _, b := range []struct{ name, path string }{{"ok", "/repo.git"}, {"port", "/to-port/repo.git"}, {"host", "/to-host/repo.git"}, {"after", "/auth-to-port/repo.git"}} {
		body := fmt.Sprintf(`{"name":%q,"url":%q,"credential":"ci"}`, b.name, srv.URL+b.path)
		if code, out := h.req("POST", "/api/v1/sources/private/git-builders", body, w); code != 201 {
			t.Fatalf("builder %s: %d %s", b.name, code, out)
		}
	}
	if code, out := h.req("POST", "/api/v1/sources/private/git-builders/ok/run", `{}`, w); code != 202 {
		t.Fatalf("run on the credential's host: %d %s", code, out)
	}
	for _, name := range []string{"port", "host", "after"} {
		code, out := h.req("POST", "/api/v1/sources/private/git-builders/"+name+"/run", `{}`, w)
		if code != 502 || strings.Contains(out, secret) {
			t.Errorf("run of the redirected builder %s: %d %s", name, code, out)
		}
	}
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + secret))
	for _, a := range srv.Received() {
		if strings.Contains(a, basic) {
			t.Fatalf("the credential reached the redirect's target %s", srv.OtherURL)
		}
	}
	if got := srv.Received(); len(got) != 0 {
		t.Errorf("the redirect's target received Authorization headers: %q", got)
	}
}

// The API binds credentials stored before they had hosts when it starts,
// and says so in its log.
func TestAPIStartBindsCredentialsStoredWithoutHosts(t *testing.T) {
	t.Parallel()
	rdb, db := redisServer.DB(t)
	env := redisServer.Settings(t.TempDir(), db)
	env["PKGFLEET_HTTP_LISTEN"] = "127.0.0.1:0"
	cfg := testenv.Config(t, env)
	ctx := context.Background()
	// A record as a6ca92f stored it: no hosts.
	old := `{"name":"ci","type":"https","created_at":"2026-01-01T00:00:00Z","sealed":"AAAA"}`
	if err := rdb.HSet(ctx, "pkgfleet:credentials", "ci", old).Err(); err != nil {
		t.Fatal(err)
	}
	reg := registry.New(rdb)
	if _, err := reg.CreateSource(ctx, registry.Source{Name: "private", Type: "git"}); err != nil {
		t.Fatal(err)
	}
	if err := reg.CreateBuilder(ctx, &registry.Builder{Source: "private", Name: "a", URL: "https://git.example.com/a.git", Credential: "ci"}); err != nil {
		t.Fatal(err)
	}
	log, logs := testenv.CapturingLogger(t)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, cfg, log) }()
	t.Cleanup(func() { cancel(); <-done })
	const line = `msg="git credential stored without hosts bound to the hosts of the git-builders that use it" name=ci hosts=[https://git.example.com:443] builders=[private/a]`
	testenv.Eventually(t, 30*time.Second, "the migration's log line", func() bool { return strings.Contains(logs.String(), line) })
	raw, _ := rdb.HGet(ctx, "pkgfleet:credentials", "ci").Result()
	if !strings.Contains(raw, `"hosts":["https://git.example.com:443"]`) || !strings.Contains(raw, `"sealed":"AAAA"`) {
		t.Errorf("stored after the migration: %s", raw)
	}
}
