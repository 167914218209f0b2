package e2e

import (
	"encoding/pem"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// privateGitServer serves repositories over https with git http-backend,
// behind basic auth, and makes git trust its certificate.
func privateGitServer(t *testing.T, user, password string) (root, baseURL string) {
	t.Helper()
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend is required: %v", err)
	}
	root = t.TempDir()
	cgiHandler := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		cgiHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemData, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_SSL_CAINFO", ca)
	return root, srv.URL
}

// Not parallel: git finds the test server's certificate through the
// process environment.
func TestHTTPSCredentialClonesAPrivateRepoAndNeverShows(t *testing.T) {
	const token = "ghp_SuperSecretToken0123456789abcdef"
	root, base := privateGitServer(t, "bot", token)
	files := testenv.CopyTree(t, examples(t, "r/hellofleet"))
	work, _ := testenv.Repo(t, files)
	testenv.Git(t, root, "clone", "--quiet", "--bare", work, "hellofleet.git")

	keyFile := filepath.Join(t.TempDir(), "credential.key")
	os.WriteFile(keyFile, []byte("0123456789abcdef0123456789abcdef-test-key"), 0o600)
	f := setup(t, testenv.AllowLoopback(map[string]string{"PKGFLEET_GIT_CREDENTIALKEYFILE": keyFile}))
	url := base + "/hellofleet.git"

	f.do("POST", "/api/v1/sources", map[string]string{"name": "private", "type": "git"}, 201)
	// Without a credential the remote refuses.
	f.do("POST", "/api/v1/sources/private/git-builders", map[string]any{"name": "nocred", "url": url}, 201)
	f.do("POST", "/api/v1/sources/private/git-builders/nocred/run", map[string]any{}, 502)
	// Userinfo in the URL is refused with a pointer to credentials.
	body := string(f.do("POST", "/api/v1/sources/private/git-builders",
		map[string]any{"name": "inline", "url": strings.Replace(url, "https://", "https://bot:"+token+"@", 1)}, 400))
	if !strings.Contains(body, "credential") {
		t.Fatalf("userinfo URL: %s", body)
	}

	f.do("POST", "/api/v1/git-credentials", map[string]any{"name": "ci", "type": "https", "hosts": []string{base}, "username": "bot", "password": token}, 201)
	f.do("POST", "/api/v1/git-credentials", map[string]any{"name": "ci", "type": "https", "hosts": []string{base}, "username": "x", "password": "y"}, 409)
	f.do("POST", "/api/v1/git-credentials", map[string]any{"name": "key", "type": "ssh", "hosts": []string{"git.example.com"},
		"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
		"known_hosts": "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}, 201)
	// The URL scheme and the credential type must match.
	f.do("POST", "/api/v1/sources/private/git-builders", map[string]any{"name": "mismatch", "url": url, "credential": "key"}, 400)
	const hookSecret = "whsec-0123456789abcdef"
	f.do("POST", "/api/v1/sources/private/git-builders", map[string]any{"url": url, "credential": "ci", "webhook_secret": hookSecret}, 201)

	b := f.wait(f.run("/api/v1/sources/private/git-builders/hellofleet/run", nil).ID)
	if b.Status != registry.StatusSucceeded {
		t.Fatalf("private build %s: %s\n%s", b.Status, b.Detail, f.log(b.ID))
	}
	f.do("GET", "/api/v1/git-credentials", nil, 200)
	f.do("GET", "/api/v1/sources/private/git-builders", nil, 200)
	f.do("DELETE", "/api/v1/git-credentials/ci", nil, 409) // still used
	buildLog := f.log(b.ID)

	for what, text := range map[string]string{"API responses": f.responses.String(), "logs": f.logs.String(), "build log": buildLog} {
		if strings.Contains(text, token) {
			t.Errorf("the token appears in the %s", what)
		}
	}
	if !strings.Contains(f.responses.String(), `"credential": "ci"`) {
		t.Error("the builder listing should name its credential")
	}
	// At rest the token is encrypted.
	vals, _ := f.rdb.HVals(t.Context(), "pkgfleet:credentials").Result()
	for _, v := range vals {
		if strings.Contains(v, token) || strings.Contains(v, "bot") {
			t.Fatal("the credential is stored in the clear")
		}
	}
	hooks, _ := f.rdb.HVals(t.Context(), "pkgfleet:webhook-secrets").Result()
	if len(hooks) != 1 || strings.Contains(hooks[0], hookSecret) {
		t.Fatalf("webhook secret at rest: %q", hooks)
	}
	for what, text := range map[string]string{"API responses": f.responses.String(), "logs": f.logs.String()} {
		if strings.Contains(text, hookSecret) {
			t.Errorf("the webhook secret appears in the %s", what)
		}
	}
}
