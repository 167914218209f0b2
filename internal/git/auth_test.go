package git

import (
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func patterns(t *testing.T, scheme string, hosts ...string) []HostPattern {
	t.Helper()
	var out []HostPattern
	for _, h := range hosts {
		p, err := ParseHostPattern(h, scheme)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// credentialFill asks git, as it asks before sending a request, for the
// credential of protocol and host, with c's environment.
func credentialFill(t *testing.T, c *Client, protocol, host string) (string, bool) {
	t.Helper()
	cmd := exec.Command("git", "credential", "fill")
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false", "GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir())
	cmd.Env = append(cmd.Env, c.Env...)
	cmd.Stdin = strings.NewReader("protocol=" + protocol + "\nhost=" + host + "\n\n")
	out, err := cmd.Output()
	return string(out), err == nil && strings.Contains(string(out), "password=s3cret")
}

func TestCredentialHelperAnswersOnlyForItsHosts(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git")
	hosts := patterns(t, "https", "git.example.com", "https://*.corp.example:8443", "[::1]:8443")
	c, done, err := (&Client{}).WithAuth(&Auth{Hosts: hosts, Username: "bot", Password: "s3cret"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	for _, tc := range []struct {
		protocol, host string
		answer         bool
	}{
		{"https", "git.example.com", true},
		{"https", "git.example.com:443", true},
		{"https", "GIT.Example.COM", true},
		{"https", "a.corp.example:8443", true},
		{"https", "[::1]:8443", true},
		{"https", "git.example.com:444", false},
		{"https", "evil.example", false},
		{"https", "git.example.com.evil.example", false},
		{"https", "xgit.example.com", false},
		{"https", "corp.example:8443", false},
		{"https", "a.b.corp.example:8443", false},
		{"https", "a.corp.example", false},
		{"https", "[::1]", false},
		{"http", "git.example.com", false},
		{"https", "*.corp.example:8443", false},
	} {
		out, answered := credentialFill(t, c, tc.protocol, tc.host)
		if answered != tc.answer {
			t.Errorf("%s://%s: answered %v, want %v (%q)", tc.protocol, tc.host, answered, tc.answer, out)
		}
		// The helper's shell match and the API's HostPattern.Match agree.
		matched := false
		if e, err := URLEndpoint(tc.protocol + "://" + tc.host + "/r.git"); err == nil {
			for _, p := range hosts {
				matched = matched || p.Match(e)
			}
		}
		if matched != tc.answer {
			t.Errorf("%s://%s: HostPattern.Match %v, the helper %v", tc.protocol, tc.host, matched, tc.answer)
		}
	}
}

// A builder's remote that redirects to another port or host, before or
// after asking for credentials, gets none there: git asks the helper
// afresh for the redirect's target, which is not among the credential's
// hosts, and curl drops the header it sent to the first host.
func TestRedirectToAnotherPortOrHostGetsNoCredential(t *testing.T) {
	t.Parallel()
	const user, secret = "bot", "tok-redirect-0123456789"
	srv := testenv.NewGitTLS(t, user, secret)
	work, _ := testenv.Repo(t, map[string]string{"a.txt": "one"})
	testenv.Git(t, srv.Root, "clone", "--quiet", "--bare", work, "repo.git")

	base := &Client{Env: srv.Env, Net: testenv.LoopbackPolicy(t)}
	ep, err := URLEndpoint(srv.URL + "/repo.git")
	if err != nil {
		t.Fatal(err)
	}
	c, done, err := base.WithAuth(&Auth{Hosts: patterns(t, "https", ep.String()), Username: user, Password: secret}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	ctx := context.Background()
	// The allowed host authenticates.
	if _, err := c.LsRemote(ctx, srv.URL+"/repo.git"); err != nil {
		t.Fatalf("ls-remote on the credential's host: %v", err)
	}
	for _, path := range []string{"/to-port/repo.git", "/to-host/repo.git", "/auth-to-port/repo.git"} {
		if _, err := c.LsRemote(ctx, srv.URL+path); err == nil {
			t.Errorf("ls-remote %s succeeded against a server that answers only 401", path)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
	want := base64.StdEncoding.EncodeToString([]byte(user + ":" + secret))
	for _, h := range srv.Received() {
		if strings.Contains(h, want) {
			t.Fatalf("the credential reached the redirect's target %s: %q", srv.OtherURL, h)
		}
	}
	if got := srv.Received(); len(got) != 0 {
		t.Errorf("the redirect's target received Authorization headers: %q", got)
	}
}

func TestSSHKeyGoesOnlyToServersInItsKnownHosts(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "ssh")
	const key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
	hosts := patterns(t, "ssh", "git.example.com")
	const line = "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

	// ssh reads the command as git runs it (sh -c "$GIT_SSH_COMMAND" and
	// git's arguments); -G prints the options it would connect with,
	// without connecting.
	ssh := func(c *Client, args ...string) (string, error) {
		cmd := exec.Command("sh", append([]string{"-c", envValue(c.Env, "GIT_SSH_COMMAND") + ` "$@"`, "ssh"}, args...)...)
		cmd.Env = append(os.Environ(), c.Env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	sshConfig := func(c *Client) string {
		t.Helper()
		out, err := ssh(c, "-o", "SendEnv=GIT_PROTOCOL", "-G", "git@git.example.com", "git-upload-pack 'r.git'")
		if err != nil {
			t.Fatalf("%s -G: %v\n%s", envValue(c.Env, "GIT_SSH_COMMAND"), err, out)
		}
		return out
	}
	tmp := t.TempDir()
	c, done, err := (&Client{}).WithAuth(&Auth{Hosts: hosts, PrivateKey: key, KnownHosts: line}, tmp)
	if err != nil {
		t.Fatal(err)
	}
	cfg := sshConfig(c)
	for _, want := range []string{"stricthostkeychecking true", "globalknownhostsfile /dev/null", "batchmode yes", "identitiesonly yes", "updatehostkeys false"} {
		if !strings.Contains(cfg, want+"\n") {
			t.Errorf("ssh -G lacks %q:\n%s", want, cfg)
		}
	}
	var known string
	for _, l := range strings.Split(cfg, "\n") {
		if v, ok := strings.CutPrefix(l, "userknownhostsfile "); ok {
			known = v
		}
	}
	if b, err := os.ReadFile(known); err != nil || strings.TrimSpace(string(b)) != line || !strings.HasPrefix(known, tmp) {
		t.Errorf("known hosts file %q = %q, %v; want the credential's own list", known, b, err)
	}
	// A destination other than its hosts (a submodule's, say) is refused
	// before ssh runs, even one the known hosts would list.
	for _, args := range [][]string{
		{"-G", "evil.example", "git-upload-pack 'r.git'"},
		{"-G", "-p", "2222", "git@git.example.com", "git-upload-pack 'r.git'"},
		{"-o", "SendEnv=GIT_PROTOCOL", "-G", "git@git.example.com.evil.example", "git-upload-pack 'r.git'"},
	} {
		if out, err := ssh(c, args...); err == nil || !strings.Contains(out, "may not be sent to") || strings.Contains(out, "stricthostkeychecking") {
			t.Errorf("ssh %q: %v\n%s", args, err, out)
		}
	}
	if out, err := ssh(c, "-4", "-p", "22", "-G", "git.example.com", "x"); err != nil || !strings.Contains(out, "port 22\n") {
		t.Errorf("ssh with git's -4 -p 22: %v\n%s", err, out)
	}
	v6, v6done, err := (&Client{}).WithAuth(&Auth{Hosts: patterns(t, "ssh", "[::1]:2222"), PrivateKey: key, KnownHosts: line}, tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer v6done()
	if out, err := ssh(v6, "-p", "2222", "-G", "git@::1", "x"); err != nil {
		t.Errorf("ssh to a bound IPv6 address: %v\n%s", err, out)
	}
	if out, err := ssh(v6, "-G", "::1", "x"); err == nil {
		t.Errorf("ssh to a bound IPv6 address on another port:\n%s", out)
	}
	done()
	if _, err := os.Stat(known); !os.IsNotExist(err) {
		t.Errorf("the key's directory outlived the cleanup: %v", err)
	}

	adminFile := filepath.Join(t.TempDir(), "known hosts")
	os.WriteFile(adminFile, []byte(line+"\n"), 0o644)
	c, done, err = (&Client{}).WithAuth(&Auth{Hosts: hosts, PrivateKey: key, KnownHostsFile: adminFile, Passphrase: "pp"}, tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if cfg := sshConfig(c); !strings.Contains(cfg, "userknownhostsfile "+adminFile+"\n") || !strings.Contains(cfg, "stricthostkeychecking true\n") {
		t.Errorf("with the admin's known hosts file:\n%s", cfg)
	}
	if _, _, err := (&Client{}).WithAuth(&Auth{Hosts: hosts, PrivateKey: key}, tmp); err == nil || !strings.Contains(err.Error(), "known hosts") {
		t.Errorf("an ssh key without known hosts: %v", err)
	}
	if _, _, err := (&Client{}).WithAuth(&Auth{PrivateKey: key, KnownHosts: line}, tmp); err == nil {
		t.Error("a credential with no hosts was used")
	}
}
