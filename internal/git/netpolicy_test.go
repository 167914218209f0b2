package git

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// exampleIsLoopback allows the name example.com, which the test resolves
// to 127.0.0.1 (where the test's https server is, whose certificate names
// example.com), and nothing else on loopback.
func exampleIsLoopback(t *testing.T) *netpolicy.Policy {
	t.Helper()
	p, err := netpolicy.New([]string{"example.com"})
	if err != nil {
		t.Fatal(err)
	}
	p.Lookup = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	return p
}

// An https remote that git may reach redirects to a port of the same host
// that the policy refuses: the redirect's connection goes through the
// operation's proxy too, the refused port never sees a connection, and the
// error is the policy's one line, none of git's or curl's text. The
// process-free listing (lsrefs.go) follows no redirect to another port at
// all, and says so.
func TestARedirectToARefusedAddressIsRefusedAtConnectTime(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git")
	inner, seen := testenv.Silent(t)
	srv, ca, asked := testenv.Redirector(t, inner)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := &Client{Net: exampleIsLoopback(t), Env: []string{"GIT_SSL_CAINFO=" + ca}, ListWithGit: true}
	_, err := c.LsRemote(context.Background(), "https://example.com:"+port+"/x.git")
	var re *netpolicy.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("ls-remote: %v, want the policy's refusal", err)
	}
	want := "git remote host " + inner + " is refused by the outbound policy (loopback); allow it with Git.AllowedHosts"
	if got := Explain(err); got != want {
		t.Errorf("Explain = %q, want %q", got, want)
	}
	c.ListWithGit = false
	_, err = c.LsRemote(context.Background(), "https://example.com:"+port+"/x.git")
	if got := Explain(err); got != "the remote redirected to another host" {
		t.Errorf("listing without git: Explain = %q (%v), want the redirect refused", got, err)
	}
	if asked() < 2 {
		t.Errorf("the allowed remote was asked %d times, want one per listing: the test proves nothing", asked())
	}
	if n := seen(); n != 0 {
		t.Errorf("the refused port saw %d connections", n)
	}
}

// By default a remote on loopback is refused, by address and by a name
// that resolves there, over https, ssh and git://; nothing connects.
func TestALoopbackRemoteIsRefusedByDefault(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git")
	addr, seen := testenv.Silent(t)
	_, port, _ := net.SplitHostPort(addr)
	for _, u := range []string{"https://" + addr + "/x.git", "https://localhost:" + port + "/x.git", "https://2130706433:" + port + "/x.git",
		"ssh://git@localhost:" + port + "/x.git", "git://" + addr + "/x.git", "git@localhost:x.git"} {
		_, err := (&Client{}).LsRemote(context.Background(), u)
		if !strings.Contains(Explain(err), "is refused by the outbound policy (loopback)") {
			t.Errorf("%s: %v", u, err)
		}
	}
	if n := seen(); n != 0 {
		t.Errorf("the loopback port saw %d connections", n)
	}
}

// ssh and git:// reach their remote through the operation's proxy (ssh's
// ProxyCommand, git's core.gitProxy: a connector to a pipe whose target
// the policy checks when it dials): a name that resolves to loopback is
// refused there and the port sees nothing; allowed, the same command
// connects to the checked address.
func TestSSHAndGitProtocolGoThroughTheOutboundPolicy(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git", "ssh")
	for _, scheme := range []string{"ssh://git@", "git://"} {
		addr, seen := testenv.Silent(t)
		_, port, _ := net.SplitHostPort(addr)
		url := scheme + "example.com:" + port + "/x.git"
		refusing := &netpolicy.Policy{Lookup: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}}
		_, err := (&Client{Net: refusing}).LsRemote(context.Background(), url)
		want := "git remote host example.com:" + port + " (resolves to 127.0.0.1) is refused by the outbound policy (loopback); allow it with Git.AllowedHosts"
		if got := Explain(err); got != want {
			t.Errorf("%s to a name on loopback: %q (%v), want %q", scheme, got, err, want)
		}
		if n := seen(); n != 0 {
			t.Fatalf("%s: the refused port saw %d connections", scheme, n)
		}
		// Allowed: the client waits for an answer the silent port never
		// sends, until the operation's deadline; the port saw it connect.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = (&Client{Net: exampleIsLoopback(t)}).LsRemote(ctx, url)
		cancel()
		if err == nil {
			t.Fatalf("%s: ls-remote of a silent port succeeded", scheme)
		}
		if n := seen(); n != 1 {
			t.Errorf("%s: the allowed port saw %d connections, want one", scheme, n)
		}
	}
}

// A clone that receives more than MaxFetchSize from its remote stops with
// ErrTooLarge; under the cap the same clone succeeds.
func TestACloneStopsAtMaxFetchSize(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git")
	big := make([]byte, 3<<20) // incompressible: the pack is as large
	_, _ = rand.Read(big)
	work, sha := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: big\n", "blob.bin": string(big)})
	root := t.TempDir()
	testenv.Git(t, root, "clone", "--quiet", "--bare", work, "big.git")
	srv, ca := testenv.GitHTTPS(t, root)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	url := "https://example.com:" + port + "/big.git"

	c := &Client{Net: exampleIsLoopback(t), Env: []string{"GIT_SSL_CAINFO=" + ca}, MaxFetchSize: 1 << 20}
	_, err := c.Clone(context.Background(), filepath.Join(t.TempDir(), "capped"), CloneOptions{URL: url, SHA: sha, Depth: 1})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(Explain(err), "Git.MaxCloneSize") {
		t.Fatalf("a 3 MiB clone under a 1 MiB cap: %v", err)
	}
	c.MaxFetchSize = 64 << 20
	dir := filepath.Join(t.TempDir(), "whole")
	if _, err := c.Clone(context.Background(), dir, CloneOptions{URL: url, SHA: sha, Depth: 1}); err != nil {
		t.Fatalf("under the cap: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "blob.bin")); err != nil || fi.Size() != int64(len(big)) {
		t.Fatalf("checkout: %v %v", fi, err)
	}
}
