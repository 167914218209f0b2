package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// GitTLS is a private git host for credential tests: two https listeners
// on loopback with certificates from a test CA that git trusts through
// Env (GIT_SSL_CAINFO), never the process environment, so tests using it
// may run in parallel.
//
// URL serves the bare repositories under Root with git http-backend,
// behind basic auth. Below it, three paths redirect to the second
// listener, which records every Authorization header it receives and
// answers every request 401 (asking for credentials):
//
//	/to-port/X       before authentication, to https://127.0.0.1:<other port>/X
//	/to-host/X       before authentication, to https://localhost:<other port>/X
//	/auth-to-port/X  after authentication, to https://127.0.0.1:<other port>/X
type GitTLS struct {
	Root     string
	URL      string // https://127.0.0.1:<port>
	OtherURL string // https://127.0.0.1:<other port>
	Env      []string

	mu       sync.Mutex
	received []string
}

// Received returns the Authorization headers the other listener got.
func (g *GitTLS) Received() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.received...)
}

// NewGitTLS starts the two listeners for the length of the test. It is the
// one place credential tests start a git server: a setting that tests on
// loopback need (an outbound network policy's allowlist) belongs here.
func NewGitTLS(t testing.TB, user, password string) *GitTLS {
	t.Helper()
	Require(t, "git")
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend is required: %v", err)
	}
	caFile, cert := testCA(t)
	g := &GitTLS{Root: t.TempDir(), Env: []string{"GIT_SSL_CAINFO=" + caFile}}

	other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		if a := r.Header.Get("Authorization"); a != "" {
			g.received = append(g.received, a)
		}
		g.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Basic realm="elsewhere"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
	}))
	other.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	other.StartTLS()
	t.Cleanup(other.Close)
	g.OtherURL = other.URL
	_, otherPort, _ := net.SplitHostPort(other.Listener.Addr().String())

	backendHandler := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + g.Root, "GIT_HTTP_EXPORT_ALL=1"}}
	redirect := func(w http.ResponseWriter, r *http.Request, host, rest string) {
		target := "https://" + net.JoinHostPort(host, otherPort) + "/" + rest
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusFound)
	}
	allowed := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/to-port/"); ok {
			redirect(w, r, "127.0.0.1", rest)
			return
		}
		if rest, ok := strings.CutPrefix(r.URL.Path, "/to-host/"); ok {
			redirect(w, r, "localhost", rest)
			return
		}
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		if rest, ok := strings.CutPrefix(r.URL.Path, "/auth-to-port/"); ok {
			redirect(w, r, "127.0.0.1", rest)
			return
		}
		backendHandler.ServeHTTP(w, r)
	}))
	allowed.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	allowed.StartTLS()
	t.Cleanup(allowed.Close)
	g.URL = allowed.URL
	return g
}

// testCA makes a CA and a certificate it signs for 127.0.0.1, ::1 and
// localhost, and writes the CA's certificate to a file for GIT_SSL_CAINFO.
func testCA(t testing.TB) (caFile string, leaf tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pkgfleet test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
