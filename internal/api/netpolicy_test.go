package api

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// A write token cannot use git as a port scanner or banner reader: a
// builder whose allowed https remote redirects to a refused address
// (another port on loopback) gets, on run, a 502 whose body is the
// policy's one line and none of git's or curl's text, and the refused
// port never sees a connection. A literal refused address is a 400 at
// creation.
func TestGitRedirectToARefusedAddressAnswersThePolicysLine(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git")
	h := setupWith(t, false, map[string]string{"PKGFLEET_GIT_ALLOWEDHOSTS": "example.com"})
	inner, seen := testenv.Silent(t)
	srv, ca, asked := testenv.Redirector(t, inner)
	// example.com is the test server's name in its certificate; the
	// policy resolves it to where the server listens.
	h.srv.Git.Net.Lookup = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	h.srv.Git.Env = []string{"GIT_SSL_CAINFO=" + ca}
	// git's way, which every clone takes: a listing without git refuses
	// a redirect to another host before the policy is asked (internal/git's
	// TestARedirectToARefusedAddressIsRefusedAtConnectTime).
	h.srv.Git.ListWithGit = true
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	h.req("POST", "/api/v1/sources", `{"name":"src","type":"git"}`, "")
	code, body := h.req("POST", "/api/v1/sources/src/git-builders", `{"name":"direct","url":"https://`+inner+`/x.git"}`, "")
	if code != 400 || !strings.Contains(body, "url: host 127.0.0.1 is refused by the outbound policy (loopback); allow it with Git.AllowedHosts") {
		t.Errorf("a loopback URL at creation: %d %s", code, body)
	}
	if code, body := h.req("POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://example.com:`+port+`/x.git"}`, ""); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	code, body = h.req("POST", "/api/v1/sources/src/git-builders/b/run", `{}`, "")
	want := "ls-remote: git remote host " + inner + " is refused by the outbound policy (loopback); allow it with Git.AllowedHosts"
	if code != 502 || !strings.Contains(body, want) || strings.Count(strings.TrimSpace(body), "\n") > 0 {
		t.Errorf("run: %d %q, want 502 with %q alone", code, body, want)
	}
	for _, leak := range []string{"fatal", "CONNECT", "curl", "unable to access", "403"} {
		if strings.Contains(body, leak) {
			t.Errorf("the answer carries git's text (%q): %s", leak, body)
		}
	}
	if asked() == 0 {
		t.Error("the allowed remote was never asked: the test proves nothing")
	}
	if n := seen(); n != 0 {
		t.Errorf("the refused port saw %d connections", n)
	}
}

// A remote that accepts and never answers holds a run for
// Git.RemoteTimeout, not a minute: the answer is a 504 that says so, and
// git's text is not in it.
func TestASilentRemoteTimesOutWithAClearAnswer(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git")
	h := setupWith(t, false, testenv.AllowLoopback(map[string]string{"PKGFLEET_GIT_REMOTETIMEOUT": "1s"}))
	addr, seen := testenv.Silent(t)
	h.req("POST", "/api/v1/sources", `{"name":"src","type":"git"}`, "")
	if code, body := h.req("POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://`+addr+`/x.git"}`, ""); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	code, body := h.req("POST", "/api/v1/sources/src/git-builders/b/run", `{}`, "")
	if code != http.StatusGatewayTimeout || !strings.Contains(body, "ls-remote: the git remote did not answer in time") {
		t.Errorf("run against a silent port: %d %s, want 504", code, body)
	}
	if seen() == 0 {
		t.Error("the silent port saw no connection: the test proves nothing")
	}
}

// With every remote query slot taken (Git.RemoteConcurrency), a run waits
// at most Git.RemoteTimeout and gets a 503 without starting git.
func TestRemoteQueriesAreCapped(t *testing.T) {
	t.Parallel()
	h := setupWith(t, false, testenv.AllowLoopback(map[string]string{"PKGFLEET_GIT_REMOTETIMEOUT": "1s", "PKGFLEET_GIT_REMOTECONCURRENCY": "2"}))
	addr, seen := testenv.Silent(t)
	h.req("POST", "/api/v1/sources", `{"name":"src","type":"git"}`, "")
	if code, body := h.req("POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://`+addr+`/x.git"}`, ""); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	if cap(h.srv.remotes) != 2 {
		t.Fatalf("%d remote query slots, want Git.RemoteConcurrency's 2", cap(h.srv.remotes))
	}
	for range cap(h.srv.remotes) {
		h.srv.remotes <- struct{}{} // queries in flight
	}
	code, body := h.req("POST", "/api/v1/sources/src/git-builders/b/run", `{}`, "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "Git.RemoteConcurrency") {
		t.Errorf("run with every slot taken: %d %s, want 503", code, body)
	}
	if n := seen(); n != 0 {
		t.Errorf("git ran without a slot: %d connections", n)
	}
}
