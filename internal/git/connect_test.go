package git

import (
	"bytes"
	"context"
	"errors"
	"io"
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

// gitDaemonRepo serves a bare copy of a new repository over git:// and
// returns its URL, its work tree (to commit to, then push) and its first
// commit.
func gitDaemonRepo(t *testing.T, files map[string]string) (url, work, sha string) {
	t.Helper()
	work, sha = testenv.Repo(t, files)
	root := t.TempDir()
	testenv.Git(t, root, "clone", "--quiet", "--bare", work, "r.git")
	testenv.Git(t, work, "remote", "add", "served", filepath.Join(root, "r.git"))
	return "git://" + testenv.GitDaemon(t, root) + "/r.git", work, sha
}

// noWaitDelay fails the test on err, and says so apart when it is the
// hang of a connector that never ends (the bash connector's bug).
func noWaitDelay(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), "WaitDelay") {
		t.Fatalf("%s: the connector did not end: %v", what, err)
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// A git:// remote (git daemon, protocol v2) is listed, cloned, and a new
// commit fetched into the kept history, through the connector: the
// connector half-closes, so the server ends each fetch and so does git.
func TestGitProtocolCloneAndFetchOfANewCommit(t *testing.T) {
	t.Parallel()
	url, work, sha := gitDaemonRepo(t, map[string]string{"DESCRIPTION": "Package: one\n"})
	c := &Client{Net: testenv.LoopbackPolicy(t)}
	// A deadline, not a measure: a connector that never ends would hold
	// the test until go test's own.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	refs, err := c.LsRemote(ctx, url)
	noWaitDelay(t, "ls-remote", err)
	if refs.Branches["main"] != sha {
		t.Fatalf("ls-remote: main = %q, want %s", refs.Branches["main"], sha)
	}
	hist := filepath.Join(t.TempDir(), "history")
	_, err = c.Clone(ctx, filepath.Join(t.TempDir(), "one"), CloneOptions{URL: url, SHA: sha, Depth: 1, History: hist})
	noWaitDelay(t, "clone", err)

	next := testenv.Commit(t, work, map[string]string{"DESCRIPTION": "Package: two\n"}, "two")
	testenv.Git(t, work, "push", "--quiet", "served", "main")
	dir := filepath.Join(t.TempDir(), "two")
	_, err = c.Clone(ctx, dir, CloneOptions{URL: url, SHA: next, Depth: 1, History: hist})
	noWaitDelay(t, "fetch of the new commit", err)
	if b, err := os.ReadFile(filepath.Join(dir, "DESCRIPTION")); err != nil || string(b) != "Package: two\n" {
		t.Fatalf("checkout of the new commit: %q %v", b, err)
	}
}

// A git:// submodule on another host than its superproject's is fetched
// from its own host, through the policy: allowed, its files are checked
// out; refused, the clone fails with the policy's refusal of that host.
func TestAGitProtocolSubmoduleGoesToItsOwnHostThroughThePolicy(t *testing.T) {
	t.Parallel()
	subURL, _, _ := gitDaemonRepo(t, map[string]string{"sub.txt": "from the submodule\n"})
	_, subPort, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(subURL, "git://"), "/r.git"))
	// Both hosts are names that the test resolves to 127.0.0.1, each
	// served on its own port.
	subByName := "git://sub.example:" + subPort + "/r.git"
	work, _ := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: super\n"})
	testenv.Git(t, work, "-c", "protocol.file.allow=always", "submodule", "add", "--quiet", subURL, "sub")
	testenv.Git(t, work, "config", "-f", ".gitmodules", "submodule.sub.url", subByName)
	sha := testenv.Commit(t, work, nil, "with a submodule")
	root := t.TempDir()
	testenv.Git(t, root, "clone", "--quiet", "--bare", work, "super.git")
	_, superPort, _ := net.SplitHostPort(testenv.GitDaemon(t, root))
	superURL := "git://example.com:" + superPort + "/super.git"
	policy := func(allowed ...string) *netpolicy.Policy {
		p, err := netpolicy.New(allowed)
		if err != nil {
			t.Fatal(err)
		}
		p.Lookup = func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return p
	}

	dir := filepath.Join(t.TempDir(), "allowed")
	_, err := (&Client{Net: policy("example.com", "sub.example")}).Clone(context.Background(), dir, CloneOptions{URL: superURL, SHA: sha, RecurseSubmodules: 1})
	noWaitDelay(t, "clone with the submodule", err)
	if b, err := os.ReadFile(filepath.Join(dir, "sub", "sub.txt")); err != nil || string(b) != "from the submodule\n" {
		t.Fatalf("submodule checkout: %q %v", b, err)
	}

	// Only the superproject's host allowed: the submodule's is refused.
	_, err = (&Client{Net: policy("example.com")}).Clone(context.Background(), filepath.Join(t.TempDir(), "refused"), CloneOptions{URL: superURL, SHA: sha, RecurseSubmodules: 1})
	var re *netpolicy.RefusedError
	if !errors.As(err, &re) || !strings.Contains(Explain(err), "sub.example:"+subPort) {
		t.Fatalf("a submodule on a refused host: %v (%s), want the policy's refusal of sub.example:%s", err, Explain(err), subPort)
	}
}

// The connector dials only a loopback proxy address, asks it for a host
// and port and nothing else, and an address the policy refuses is refused
// by the proxy, not reached.
func TestTheConnectorReachesOnlyItsProxy(t *testing.T) {
	t.Parallel()
	silent, seen := testenv.Silent(t)
	for _, proxy := range []string{silent[:0], "example.com:80", "192.0.2.1:3128", "0.0.0.0:1", "[::ffff:192.0.2.1]:80"} {
		err := connect(proxy, "example.com:9418", strings.NewReader(""), nopCloser{io.Discard})
		if err == nil || !strings.Contains(err.Error(), "is not the operation's proxy") {
			t.Errorf("proxy %q: %v", proxy, err)
		}
	}
	px, err := (&netpolicy.Policy{}).Listen(0) // the default policy: no loopback
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	for _, target := range []string{"", "a b:1", "-oProxyCommand=x:22", "host:port", "h:1\r\nX: y"} {
		if err := connect(px.Addr(), target, strings.NewReader(""), nopCloser{io.Discard}); err == nil {
			t.Errorf("target %q was asked for", target)
		}
	}
	err = connect(px.Addr(), silent, strings.NewReader("x"), nopCloser{io.Discard})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a loopback target through the default policy: %v, want the proxy's 403", err)
	}
	if n := seen(); n != 0 {
		t.Errorf("the refused target saw %d connections", n)
	}
}

// When its input ends the connector shuts down the socket's write side,
// and it returns when the remote's side ends: a server that answers only
// after the client's end gets its answer through.
func TestTheConnectorHalfCloses(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Until the client's end; a connector that never ends its side
		// gets no answer, after a deadline.
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return
		}
		_, _ = c.Write(append([]byte("got "), b...))
	}()
	px, err := testenv.LoopbackPolicy(t).Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	var out bytes.Buffer
	if err := connect(px.Addr(), ln.Addr().String(), strings.NewReader("hello"), nopCloser{&out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "got hello" {
		t.Fatalf("answer %q, want %q", out.String(), "got hello")
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// A submodule over ssh or git:// of an https repository connects through
// the policy too (git://: refused on loopback, ssh: no host but the
// repository's own): the port it names never sees a connection.
func TestASubmoduleOfAnHTTPSRepositoryDoesNotConnectAroundThePolicy(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git", "ssh")
	sub, _ := testenv.Repo(t, map[string]string{"sub.txt": "x\n"})
	for _, scheme := range []string{"git://", "ssh://git@"} {
		silent, seen := testenv.Silent(t)
		work, _ := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: super\n"})
		testenv.Git(t, work, "-c", "protocol.file.allow=always", "submodule", "add", "--quiet", sub, "sub")
		testenv.Git(t, work, "config", "-f", ".gitmodules", "submodule.sub.url", scheme+silent+"/x.git")
		sha := testenv.Commit(t, work, nil, "with a submodule")
		root := t.TempDir()
		testenv.Git(t, root, "clone", "--quiet", "--bare", work, "super.git")
		srv, ca := testenv.GitHTTPS(t, root)
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c := &Client{Net: exampleIsLoopback(t), Env: []string{"GIT_SSL_CAINFO=" + ca}}
		_, err := c.Clone(ctx, filepath.Join(t.TempDir(), "c"), CloneOptions{URL: "https://example.com:" + port + "/super.git", SHA: sha, RecurseSubmodules: 1})
		cancel()
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s submodule on loopback: %v, want a failure at once", scheme, err)
		}
		if n := seen(); n != 0 {
			t.Errorf("%s submodule: its port saw %d connections", scheme, n)
		}
	}
}
