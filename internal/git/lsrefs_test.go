package git

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// listingRepos makes, under root, bare repositories that cover what a
// listing must get right: branches (one with a slash), a lightweight, an
// annotated and a tag of a tag, HEAD on a branch other than the first,
// refs loose and packed, tag objects loose and packed, and an empty
// repository. It returns their names.
func listingRepos(t *testing.T, root string) []string {
	t.Helper()
	work, _ := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: p\nVersion: 1.0\n"})
	testenv.Git(t, work, "branch", "dev")
	testenv.Git(t, work, "branch", "feature/x")
	testenv.Git(t, work, "tag", "v1.0")
	testenv.Commit(t, work, map[string]string{"DESCRIPTION": "Package: p\nVersion: 2.0\n"}, "two")
	testenv.Git(t, work, "tag", "-a", "-m", "two", "v2.0")
	testenv.Git(t, work, "tag", "-a", "-m", "nested", "v2.0-signed", "v2.0")

	clone := func(name string) string {
		testenv.Git(t, root, "clone", "--quiet", "--bare", "--no-local", work, name)
		return filepath.Join(root, name)
	}
	loose := clone("loose.git") // packed-refs from the clone
	testenv.Git(t, loose, "tag", "-a", "-m", "loose", "v3.0", "main")
	testenv.Git(t, loose, "symbolic-ref", "HEAD", "refs/heads/dev")
	testenv.Git(t, loose, "update-ref", "refs/pull/1/head", "main") // not listed

	packed := clone("packed.git")
	testenv.Git(t, packed, "tag", "-a", "-m", "then packed", "v4.0", "main")
	testenv.Git(t, packed, "gc", "--quiet")

	// A loose ref to a tag object that is only in a pack: git's to list.
	fallback := clone("fallback.git")
	testenv.Git(t, fallback, "gc", "--quiet")
	tagObject := strings.TrimSpace(testenv.Git(t, fallback, "rev-parse", "refs/tags/v2.0"))
	testenv.Git(t, fallback, "update-ref", "refs/tags/v2.0-again", tagObject)

	testenv.Git(t, root, "init", "--quiet", "--bare", "empty.git")
	return []string{"loose.git", "packed.git", "fallback.git", "empty.git"}
}

// The process-free listing of a local repository and of a smart-HTTP
// server (protocol v2, and v0 from a server that ignores the request for
// v2) is git ls-remote's, on every repository of listingRepos.
func TestListingWithoutGitMatchesLsRemote(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git")
	root := t.TempDir()
	names := listingRepos(t, root)
	for _, name := range names { // a repository with a work tree, .git inside
		testenv.Git(t, root, "clone", "--quiet", "--no-local", filepath.Join(root, name), name+"-work")
		testenv.Git(t, filepath.Join(root, name+"-work"), "pack-refs", "--all")
	}
	backend := &cgi.Handler{Path: "/usr/lib/git-core/git-http-backend", Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	v2, ca := testenv.TLSServer(t, backend)
	v0, ca0 := testenv.TLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Git-Protocol")
		backend.ServeHTTP(w, r)
	}))
	for _, name := range names {
		for _, remote := range []struct {
			how, url, ca string
		}{
			{"file", "file://" + filepath.Join(root, name), ""},
			{"file-worktree", "file://" + filepath.Join(root, name+"-work"), ""},
			{"https-v2", v2.URL + "/" + name, ca},
			{"https-v0", v0.URL + "/" + name, ca0},
		} {
			t.Run(name+"/"+remote.how, func(t *testing.T) {
				c := &Client{Policy: URLPolicy{AllowFile: true}, Net: loopbackAllowed(t), Env: []string{"GIT_SSL_CAINFO=" + remote.ca}}
				if strings.HasPrefix(remote.how, "file") {
					_, err := c.lsRemoteFile(remote.url)
					if fell := errors.Is(err, errFallback); fell != (remote.how == "file" && name == "fallback.git") {
						t.Fatalf("read without git: %v (only fallback.git is git's)", err)
					}
				}
				got, err := c.LsRemote(context.Background(), remote.url)
				if err != nil {
					t.Fatal(err)
				}
				c.ListWithGit = true
				want, err := c.LsRemote(context.Background(), remote.url)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("listing without git:\n%+v\ngit ls-remote:\n%+v", got, want)
				}
				if name == "empty.git" {
					if len(got.Branches)+len(got.Tags) != 0 || got.Head != "" {
						t.Fatalf("empty repository listed %+v", got)
					}
					return
				}
				commit := strings.TrimSpace(testenv.Git(t, filepath.Join(root, name), "rev-parse", "main"))
				if got.Tags["v2.0"] != commit || got.Tags["v2.0-signed"] != commit || (remote.how != "file-worktree" && len(got.Branches) != 3) {
					t.Fatalf("tags not peeled to %s, or branches missing: %+v", commit, got)
				}
			})
		}
	}
	// The loose repository's HEAD was moved: the symref, not the first branch.
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	if refs, err := c.LsRemote(context.Background(), "file://"+filepath.Join(root, "loose.git")); err != nil || refs.Head != "dev" {
		t.Fatalf("HEAD: %+v, %v", refs, err)
	}
}

// loopbackAllowed is a policy that lets the test reach its own servers.
func loopbackAllowed(t *testing.T) *netpolicy.Policy {
	t.Helper()
	p, err := netpolicy.New([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A private https remote: the wrong password is a clear error that holds
// no secret; the right one lists; a redirect to another port gets no
// credential (and is not followed).
func TestListingAPrivateRemoteSendsTheCredentialOnlyToItsHost(t *testing.T) {
	t.Parallel()
	g := testenv.NewGitTLS(t, "alice", "s3cret-token")
	testenv.Git(t, g.Root, "init", "--quiet", "--bare", "r.git")
	work, sha := testenv.Repo(t, map[string]string{"f": "x"})
	testenv.Git(t, work, "push", "--quiet", filepath.Join(g.Root, "r.git"), "HEAD:refs/heads/main")
	host, err := ParseHostPattern(strings.TrimPrefix(g.URL, "https://"), "https")
	if err != nil {
		t.Fatal(err)
	}
	base := &Client{Net: loopbackAllowed(t), Env: g.Env}
	list := func(password, url string) (*Refs, error) {
		c, done, err := base.WithAuth(&Auth{Hosts: []HostPattern{host}, Username: "alice", Password: password}, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer done()
		return c.LsRemote(context.Background(), url)
	}
	_, err = list("wrong-password", g.URL+"/r.git")
	if Explain(err) != sayAuth || strings.Contains(err.Error(), "wrong-password") {
		t.Fatalf("wrong password: %q (%v)", Explain(err), err)
	}
	refs, err := list("s3cret-token", g.URL+"/r.git")
	if err != nil || refs.Branches["main"] != sha {
		t.Fatalf("right password: %+v, %v", refs, err)
	}
	_, err = list("s3cret-token", g.URL+"/auth-to-port/r.git")
	if Explain(err) != "the remote redirected to another host" {
		t.Fatalf("redirect: %q (%v)", Explain(err), err)
	}
	if got := g.Received(); len(got) != 0 {
		t.Fatalf("the other port received credentials: %q", got)
	}
}

// A hostile server's advertisement: an endless one ends at the listing
// limit with memory bounded by it; garbage and a malformed pkt-line are a
// clear error naming neither the server's words nor a Go parse detail.
func TestAHostileAdvertisementIsAClearErrorInBoundedMemory(t *testing.T) {
	line := []byte(pktLine(strings.Repeat("a", 40) + " refs/tags/" + strings.Repeat("x", 200) + "\n"))
	var stream [64 << 10]byte
	for i := 0; i+len(line) <= len(stream); i += len(line) {
		copy(stream[i:], line)
	}
	srv, ca := testenv.TLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
		switch r.URL.Path {
		case "/endless/info/refs":
			io.WriteString(w, pktLine("# service=git-upload-pack\n")+"0000")
			w.Write([]byte(pktLine(strings.Repeat("a", 40) + " HEAD\x00symref=HEAD:refs/heads/main\n")))
			for n := 0; n < 1<<30; n += len(stream) / len(line) * len(line) {
				if _, err := w.Write(stream[:len(stream)/len(line)*len(line)]); err != nil {
					return
				}
			}
		case "/garbage/info/refs":
			io.WriteString(w, "<html>this is not git, and a server's words "+strings.Repeat("!", 5000))
		case "/huge-line/info/refs":
			io.WriteString(w, "ffff"+strings.Repeat("a", 100))
		}
	}))
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := &Client{Net: loopbackAllowed(t), Env: []string{"GIT_SSL_CAINFO=" + ca}, MaxFetchSize: 4 << 20}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := c.LsRemote(context.Background(), "https://127.0.0.1:"+port+"/endless")
	runtime.ReadMemStats(&after)
	if !errors.Is(err, errTooManyRefs) || Explain(err) != errTooManyRefs.Error() {
		t.Fatalf("endless advertisement: %v", err)
	}
	// The refs kept (one name per line read) are the bulk; 4 MiB read
	// keeps well under 64 MiB however the heap grows.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("listing a 4 MiB-capped advertisement allocated %d MiB", grew>>20)
	}
	// Without the test's CA: Go's text (the certificate's names) stays in
	// the log.
	untrusting := &Client{Net: loopbackAllowed(t)}
	if _, err := untrusting.LsRemote(context.Background(), "https://127.0.0.1:"+port+"/garbage"); Explain(err) != "the remote's TLS certificate was not accepted" {
		t.Errorf("an untrusted certificate: %q (%v)", Explain(err), err)
	}
	for _, path := range []string{"garbage", "huge-line"} {
		_, err := c.LsRemote(context.Background(), "https://127.0.0.1:"+port+"/"+path)
		if Explain(err) != sayNotAdvertisement {
			t.Errorf("%s: %q (%v)", path, Explain(err), err)
		}
	}
}
