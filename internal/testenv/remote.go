package testenv

import (
	"encoding/pem"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// GitHTTPS serves the bare repositories below root over https with git
// http-backend (what a git forge runs), with httptest's certificate, and
// returns the server and a CA file that makes git trust it
// (GIT_SSL_CAINFO). The server answers for 127.0.0.1 and example.com.
func GitHTTPS(t testing.TB, root string) (*httptest.Server, string) {
	t.Helper()
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend is required: %v", err)
	}
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	return TLSServer(t, h)
}

// TLSServer is an https server of h for the test, and the CA file that
// makes git and curl trust it.
func TLSServer(t testing.TB, h http.Handler) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv, ca
}

// Silent listens on a loopback port for the test, accepts connections,
// counts them and never answers (a port that holds a client until its
// time-out). It returns the address and the count so far.
func Silent(t testing.TB) (string, func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); close(done) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() { <-done; c.Close() }()
		}
	}()
	return ln.Addr().String(), n.Load
}

// Redirector is an https server (CA file as TLSServer's) that redirects
// every request to the same path on https://to, and counts the requests
// it answered: a remote that sends git elsewhere.
func Redirector(t testing.TB, to string) (srv *httptest.Server, ca string, asked func() int64) {
	t.Helper()
	var n atomic.Int64
	srv, ca = TLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.Redirect(w, r, "https://"+to+r.URL.RequestURI(), http.StatusFound)
	}))
	return srv, ca, n.Load
}

// GitDaemon serves the bare repositories below root over git:// with
// git daemon (one `git daemon --inetd` per connection, on a loopback port
// of the test's) and returns its address.
func GitDaemon(t testing.TB, root string) string {
	t.Helper()
	Require(t, "git")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served sync.WaitGroup
	t.Cleanup(func() { ln.Close(); served.Wait() })
	served.Add(1)
	go func() {
		defer served.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			served.Add(1)
			go func() {
				defer served.Done()
				defer c.Close()
				f, err := c.(*net.TCPConn).File()
				if err != nil {
					return
				}
				defer f.Close()
				cmd := exec.Command("git", "daemon", "--inetd", "--export-all", "--base-path="+root, root)
				cmd.Stdin, cmd.Stdout = f, f
				cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
				_ = cmd.Run()
			}()
		}
	}()
	return ln.Addr().String()
}
