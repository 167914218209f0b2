package door

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
)

// syncLog is a build log several handlers write at once.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

const wheelBody = "not really a wheel"

// privateIndex is an https index that wants basic auth user:s3cret and
// remembers the Authorization headers it saw.
func privateIndex(t *testing.T) (*httptest.Server, *[]string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "s3cret" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/repo/simple/pkg/":
			fmt.Fprint(w, `<a href="../../files/pkg-1.0-py3-none-any.whl">pkg-1.0-py3-none-any.whl</a>`)
		case "/repo/files/pkg-1.0-py3-none-any.whl":
			fmt.Fprint(w, wheelBody)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

// serve starts d on a loopback listener and returns a client whose proxy
// is d, and a function that closes the listener and waits for Serve.
func serve(t *testing.T, d *Door, tlsFrom *httptest.Server) (*http.Client, string, func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = d.Serve(l); close(done) }()
	proxy, _ := url.Parse("http://" + l.Addr().String())
	tr := &http.Transport{Proxy: http.ProxyURL(proxy)}
	if tlsFrom != nil {
		tr.TLSClientConfig = tlsFrom.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	}
	stop := func() {
		l.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Serve did not return after its listener closed")
		}
	}
	t.Cleanup(func() { l.Close() })
	return &http.Client{Transport: tr}, l.Addr().String(), stop
}

// connect asks the door at proxyAddr for a tunnel to target and returns
// the connection (closed when the test ends) and the door's status.
func connect(t *testing.T, proxyAddr, target string) (net.Conn, int) {
	t.Helper()
	conn, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	return conn, resp.StatusCode
}

func get(t *testing.T, c *http.Client, method, u string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	req.Header.Set("Authorization", "Basic "+"YnVpbGQ6Z3Vlc3M=") // the build's guess: dropped
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDoorFetchesFromAPrivateHTTPSIndexWithCredentialsTheBuildNeverSees(t *testing.T) {
	t.Parallel()
	idx, seen := privateIndex(t)
	var log syncLog
	d, err := New(&log, Index{URL: "https://user:s3cret@" + idx.Listener.Addr().String() + "/repo/simple/", Kind: Python})
	if err != nil {
		t.Fatal(err)
	}
	d.Transport = idx.Client().Transport
	c, _, stop := serve(t, d, nil)

	buildURL := d.BuildURL(0)
	if strings.Contains(buildURL, "s3cret") || !strings.HasPrefix(buildURL, "http://") {
		t.Fatalf("BuildURL = %q: want http:// and no credentials", buildURL)
	}
	if code, body := get(t, c, "GET", buildURL+"pkg/"); code != 200 || !strings.Contains(body, "pkg-1.0") {
		t.Fatalf("index page: %d %q", code, body)
	}
	if code, body := get(t, c, "GET", strings.TrimSuffix(buildURL, "simple/")+"files/pkg-1.0-py3-none-any.whl"); code != 200 || body != wheelBody {
		t.Fatalf("wheel: %d %q", code, body)
	}
	sum := sha256.Sum256([]byte(wheelBody))
	if f := d.Fetched(); len(f) != 1 || !reflect.DeepEqual(f[0], Fetched{Name: "pkg", Version: "1.0", File: "pkg-1.0-py3-none-any.whl", SHA256: hex.EncodeToString(sum[:])}) {
		t.Fatalf("Fetched = %+v", f)
	}
	for _, h := range *seen {
		if h != "Basic dXNlcjpzM2NyZXQ=" {
			t.Errorf("the index saw Authorization %q, want the door's own", h)
		}
	}

	// Refused: another path on the index's host, writes, another host.
	host := idx.Listener.Addr().String()
	for _, tc := range []struct{ method, url string }{
		{"GET", "http://" + host + "/admin/"},
		{"GET", buildURL + "../../admin/"},
		{"POST", buildURL + "pkg/"},
		{"GET", "http://127.0.0.1:1/"},
	} {
		if code, body := get(t, c, tc.method, tc.url); code != http.StatusForbidden || !strings.Contains(body, "pkgfleet door: refused") {
			t.Errorf("%s %s: %d %q, want 403 from the door", tc.method, tc.url, code, body)
		}
	}
	stop()
	if strings.Contains(log.String(), "s3cret") || strings.Contains(log.String(), "user:") {
		t.Errorf("the build log shows the credentials:\n%s", log.String())
	}
	if n := strings.Count(log.String(), "==> door: refused"); n != 4 {
		t.Errorf("%d refusals in the log, want 4:\n%s", n, log.String())
	}
}

// An index page may link with https://: CONNECT to the index's own host
// opens a tunnel (nothing added, nothing recorded); to any other, 403.
// Serve returns once its listener closes, even with a tunnel open.
func TestDoorTunnelsOnlyToAnHTTPSIndexAndClosesTunnelsWhenTheBuildEnds(t *testing.T) {
	t.Parallel()
	idx, _ := privateIndex(t)
	var log syncLog
	d, err := New(&log, Index{URL: idx.URL + "/repo/simple/", Kind: Python})
	if err != nil {
		t.Fatal(err)
	}
	d.Net = allow(t, "127.0.0.1")
	c, proxyAddr, stop := serve(t, d, idx)
	if code, _ := get(t, c, "GET", idx.URL+"/repo/simple/pkg/"); code != http.StatusUnauthorized {
		t.Fatalf("through the tunnel: %d, want the index's own 401 (no credentials are added to a tunnel)", code)
	}
	if len(d.Fetched()) != 0 {
		t.Errorf("a tunnel recorded %+v", d.Fetched())
	}

	other := httptest.NewTLSServer(http.NotFoundHandler())
	defer other.Close()
	if _, code := connect(t, proxyAddr, other.Listener.Addr().String()); code != http.StatusForbidden {
		t.Fatalf("CONNECT to another host: %d, want 403", code)
	}
	open, code := connect(t, proxyAddr, idx.Listener.Addr().String())
	if code != http.StatusOK {
		t.Fatalf("CONNECT to the index: %d", code)
	}
	stop() // fails the test if Serve waits for the open tunnel
	_ = open.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := open.Read(make([]byte, 1)); err == nil {
		t.Error("the tunnel stayed open after the build ended")
	}
}

func TestDistributionNamesFromIndexFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ kind, file, name, version string }{
		{Python, "flit_core-3.12.0-py3-none-any.whl", "flit_core", "3.12.0"},
		{Python, "hatch_vcs-0.4.0.tar.gz", "hatch_vcs", "0.4.0"},
		{Python, "index.html", "", ""},
		{R, "knitr_1.45.tar.gz", "knitr", "1.45"},
		{R, "data.table_1.14.8-1.tar.gz", "data.table", "1.14.8-1"},
		{R, "PACKAGES.gz", "", ""},
	} {
		n, v, ok := distribution(tc.kind, tc.file)
		if n != tc.name || v != tc.version || ok != (tc.name != "") {
			t.Errorf("distribution(%s, %s) = %q %q %v", tc.kind, tc.file, n, v, ok)
		}
	}
}

func TestIndexURLsAreCheckedWithoutRepeatingAPassword(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"ftp://host/simple/", "https:///simple/", "https://host/simple/?x=1", "https://u:pa ss@host/%zz"} {
		err := CheckURL(bad)
		if err == nil {
			t.Errorf("CheckURL(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "pa ss") {
			t.Errorf("CheckURL(%q) = %v: repeats the password", bad, err)
		}
	}
	if err := CheckURL("https://user:pw@mirror.example/simple/"); err != nil {
		t.Errorf("a private index: %v", err)
	}
}

// TestProvenanceListsEachFileOnceWithTheEnvironmentsThatAskedForIt: python
// -m build --sdist --wheel installs its requirements through the door
// twice, once per environment (pip without a cache); the record lists
// each file once and says which environment asked for it.
func TestProvenanceListsEachFileOnceWithTheEnvironmentsThatAskedForIt(t *testing.T) {
	t.Parallel()
	f := func(name, file string) Fetched { return Fetched{Name: name, Version: "1", File: file, SHA256: file} }
	st, pc, wh, ex := f("setuptools", "setuptools-1-py3-none-any.whl"), f("poetry-core", "poetry_core-1-py3-none-any.whl"),
		f("wheel", "wheel-1-py3-none-any.whl"), f("extra", "extra-1.tar.gz")
	// sdist: setuptools, poetry-core; wheel: setuptools, poetry-core, wheel, extra.
	got := provenance([]Fetched{st, pc, st, pc, wh, ex}, []string{"sdist", "wheel"})
	want := []Fetched{st, pc, wh, ex}
	want[0].Environments = []string{"sdist", "wheel"}
	want[1].Environments = []string{"sdist", "wheel"}
	want[2].Environments = []string{"wheel"}
	want[3].Environments = []string{"wheel"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("provenance =\n%+v\nwant\n%+v", got, want)
	}
	// Without environments (R): each file once, none named.
	if got := provenance([]Fetched{st, st}, nil); len(got) != 1 || got[0].Environments != nil {
		t.Fatalf("provenance without environments = %+v", got)
	}
}

func allow(t *testing.T, entries ...string) *netpolicy.Policy {
	t.Helper()
	p, err := netpolicy.New(entries)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// countingIndex is a plain http index on loopback that counts the
// connections it accepts.
func countingIndex(t *testing.T) (*httptest.Server, func() int) {
	t.Helper()
	var mu sync.Mutex
	conns := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "index page")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, func() int { mu.Lock(); defer mu.Unlock(); return conns }
}

// The door's upstream connections go through the outbound policy: an index
// on loopback (the worker's own ports), a link-local or metadata address
// or a private range is refused by default, with the reason in the build
// log and the answer, and the index never sees a connection; allowed, the
// same index is reached. The names are resolved by a hook, as DNS
// rebinding would answer.
func TestDoorRefusesLoopbackLinkLocalAndPrivateIndexesUnlessAllowed(t *testing.T) {
	t.Parallel()
	idx, conns := countingIndex(t)
	_, port, _ := net.SplitHostPort(idx.Listener.Addr().String())
	rebind := func(addr string) func(context.Context, string) ([]netip.Addr, error) {
		return func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr(addr)}, nil
		}
	}
	for _, tc := range []struct {
		name, url, why string
		net            *netpolicy.Policy
	}{
		{"loopback", idx.URL + "/simple/", "(loopback)", nil},
		{"localhost", "http://localhost:" + port + "/simple/", "(loopback)", nil},
		{"IPv4-mapped loopback", "http://[::ffff:127.0.0.1]:" + port + "/simple/", "(loopback)", nil},
		{"link-local", "http://index.test:" + port + "/simple/", "(link-local)", &netpolicy.Policy{Lookup: rebind("169.254.10.1")}},
		{"metadata", "http://index.test/simple/", "(cloud metadata)", &netpolicy.Policy{Lookup: rebind("169.254.169.254")}},
		{"private", "http://index.test:" + port + "/simple/", "(private)", &netpolicy.Policy{Lookup: rebind("10.1.2.3")}},
		{"rebound to loopback", "http://index.test:" + port + "/simple/", "(loopback)", &netpolicy.Policy{Lookup: rebind("127.0.0.1")}},
	} {
		var log syncLog
		d, err := New(&log, Index{URL: tc.url, Kind: Python})
		if err != nil {
			t.Fatal(err)
		}
		d.Net = tc.net
		c, _, stop := serve(t, d, nil)
		code, body := get(t, c, "GET", d.BuildURL(0)+"pkg/")
		stop()
		if code != http.StatusForbidden || !strings.Contains(body, "refused by the outbound policy "+tc.why) {
			t.Errorf("%s: %d %q, want 403 naming the outbound policy %s", tc.name, code, body, tc.why)
		}
		if want := "is refused by the outbound policy " + tc.why + "; allow it with Git.AllowedHosts"; !strings.Contains(log.String(), want) {
			t.Errorf("%s: the build log does not say %q:\n%s", tc.name, want, log.String())
		}
	}
	if n := conns(); n != 0 {
		t.Errorf("the loopback index saw %d connections through refusing doors", n)
	}

	// Allowed by address, and by name.
	for _, net := range []*netpolicy.Policy{allow(t, "127.0.0.0/8"), allow(t, "localhost")} {
		d, err := New(io.Discard, Index{URL: "http://localhost:" + port + "/simple/", Kind: Python})
		if err != nil {
			t.Fatal(err)
		}
		d.Net = net
		c, _, stop := serve(t, d, nil)
		if code, body := get(t, c, "GET", d.BuildURL(0)+"pkg/"); code != 200 || body != "index page" {
			t.Errorf("allowed: %d %q", code, body)
		}
		stop()
	}
	if conns() == 0 {
		t.Error("the allowed door never reached the index")
	}
}

// A CONNECT tunnel to an https index is dialled through the policy too.
func TestDoorRefusesATunnelToALoopbackIndex(t *testing.T) {
	t.Parallel()
	idx, _ := privateIndex(t)
	var log syncLog
	d, err := New(&log, Index{URL: idx.URL + "/repo/simple/", Kind: Python})
	if err != nil {
		t.Fatal(err)
	}
	_, proxyAddr, stop := serve(t, d, idx)
	defer stop()
	if _, code := connect(t, proxyAddr, idx.Listener.Addr().String()); code != http.StatusForbidden {
		t.Fatalf("CONNECT to a loopback index: %d, want 403", code)
	}
	if !strings.Contains(log.String(), "refused by the outbound policy (loopback)") {
		t.Errorf("the build log does not name the policy:\n%s", log.String())
	}
}
