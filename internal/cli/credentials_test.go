package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
)

// A unit test of the flags and output alone, against a stub API (the API's
// checks are tested in internal/api): create sends the hosts and the known
// hosts, edit replaces the hosts, and the listing shows them.
func TestCredentialCommandsCarryAndShowHosts(t *testing.T) {
	var got []map[string]any
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		got = append(got, body)
		info := apiv1.CredentialInfo{Name: "deploy", Type: "ssh", Hosts: []string{"ssh://git.example.com:22", "ssh://*.corp.example:2222"}}
		switch r.Method + " " + r.URL.Path {
		case "POST /api/v1/git-credentials", "PATCH /api/v1/git-credentials/deploy":
			_ = json.NewEncoder(w).Encode(info)
		case "GET /api/v1/git-credentials":
			_ = json.NewEncoder(w).Encode(apiv1.Credentials{Credentials: []apiv1.CredentialInfo{info, {Name: "old", Type: "https"}}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer api.Close()
	dir := t.TempDir()
	key, known := filepath.Join(dir, "id"), filepath.Join(dir, "known_hosts")
	os.WriteFile(key, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600)
	os.WriteFile(known, []byte("git.example.com ssh-ed25519 AAAA\n"), 0o644)
	var out, errb bytes.Buffer
	app := &App{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == "PKGFLEET_ADDRESS" {
			return api.URL
		}
		return ""
	}}
	run := func(args ...string) {
		t.Helper()
		if code := Main(context.Background(), args, app); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out.String(), errb.String())
		}
	}
	run("create", "git-credential", "--name", "deploy", "--type", "ssh", "--host", "git.example.com",
		"--host", "*.corp.example:2222", "--private-key-file", key, "--known-hosts-file", known)
	run("edit", "git-credential", "--name", "deploy", "--host", "git.example.com,ssh://*.corp.example:2222")
	run("list", "git-credentials")
	if len(got) != 3 {
		t.Fatalf("requests: %v", got)
	}
	for i, want := range []string{`["git.example.com","*.corp.example:2222"]`, `["git.example.com","ssh://*.corp.example:2222"]`} {
		if h, _ := json.Marshal(got[i]["hosts"]); string(h) != want {
			t.Errorf("request %d hosts = %s, want %s", i, h, want)
		}
	}
	if got[0]["known_hosts"] != "git.example.com ssh-ed25519 AAAA" || got[1]["known_hosts"] != nil {
		t.Errorf("known_hosts sent: %q, %q", got[0]["known_hosts"], got[1]["known_hosts"])
	}
	for _, want := range []string{
		"Git credential deploy (ssh) created for ssh://git.example.com:22, ssh://*.corp.example:2222.",
		"Git credential deploy may be sent to ssh://git.example.com:22, ssh://*.corp.example:2222.",
		"deploy  ssh    ssh://git.example.com:22,ssh://*.corp.example:2222",
		"old     https  (none: unusable until set)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
