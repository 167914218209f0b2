// Package door is the one way out of a build's empty network namespace: a
// forward proxy that lets the build reach the package indexes it was given
// (Git.PythonIndexURL, Git.RRepositoryURL, or a builder's override) and
// nothing else. It adds a private index's credentials itself, so the build
// never sees them, writes every refusal into the build log, and lists the
// distributions that came through it with their sha256 (the build's
// provenance).
//
// It does not put the listener where the build can reach it (internal/sandbox
// does: a socket inside the build's network namespace whose other end is
// the worker), and it does not choose the indexes (the worker's settings and
// the builder do).
//
// What a build may ask for:
//   - absolute-form GET or HEAD of http://HOST:PORT/PATH, where HOST:PORT is
//     an index's and PATH lies below the index's root. The door fetches it
//     with the index's own scheme, so a build reaches an https index as
//     http://HOST:443/… and the door speaks TLS, checks the certificate,
//     adds the credentials and sees the files (BuildURL gives that URL);
//   - CONNECT HOST:443 of an https index, for links an index page gives
//     with https://: a tunnel the door cannot look into (no credentials
//     added, no path checked, nothing recorded).
//
// Everything else (another host or port, another path on the index's host
// such as pkgfleet's own API, other methods) gets 403 and a line in the log.
//
// The door connects only where the outbound policy (internal/netpolicy,
// Door.Net) allows, judged on the address it dials: an index on loopback,
// a private range or a metadata address is refused unless the admin
// allowed it (Git.AllowedHosts), whatever its name resolves to.
package door

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
	"github.com/pkgfleet/pkgfleet/internal/pkgmeta"
)

// Kinds of index, which say how a fetched file names its package.
const (
	Python = "python" // PEP 503 simple index: name-version….whl, name-version.tar.gz
	R      = "r"      // CRAN-like repository: name_version.tar.gz
)

// Index is one package index a build may reach.
type Index struct {
	URL  string // as configured; may carry user:password for a private index
	Kind string // Python or R
}

// Fetched is one distribution a build fetched through its door, as the
// build record lists it (apiv1.Fetched): a rebuild can pin to these.
type Fetched = apiv1.Fetched

// CheckURL says whether raw can be an index URL: http or https, a host,
// no query or fragment.
func CheckURL(raw string) error {
	_, err := parseIndex(Index{URL: raw, Kind: Python})
	return err
}

type index struct {
	kind     string
	scheme   string // of the real index
	hostport string // host:port, the port explicit
	prefix   string // the paths a build may fetch: the index's root, ending in "/"
	auth     string // Authorization header value; "" for a public index
	shown    string // the URL without credentials, for logs
	buildURL string // the URL the build uses
}

func parseIndex(ix Index) (*index, error) {
	u, err := url.Parse(ix.URL)
	if err != nil {
		return nil, errors.New("not a URL") // url's error would repeat a password
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("scheme must be http or https, not %q", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, errors.New("has no host")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, errors.New("must have no query or fragment")
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	x := &index{kind: ix.Kind, scheme: u.Scheme, hostport: net.JoinHostPort(u.Hostname(), port)}
	if u.User != nil {
		pass, _ := u.User.Password()
		x.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass))
		u.User = nil
	}
	p := strings.TrimSuffix(u.Path, "/") + "/"
	if ix.Kind == Python {
		// pip fetches the files an index page links to; pkgfleet's (and
		// most mirrors') live beside simple/, not below it.
		p = strings.TrimSuffix(p, "simple/")
	}
	x.prefix = p
	x.shown = u.String()
	bu := *u
	bu.Scheme, bu.Host = "http", x.hostport
	x.buildURL = bu.String()
	return x, nil
}

// Door serves one build. Create one per build with New; it is safe for
// concurrent use.
type Door struct {
	indexes []*index
	log     io.Writer
	// Net is the outbound policy every connection to an index is dialled
	// through; nil: the default policy (no loopback, link-local, private
	// or metadata address).
	Net *netpolicy.Policy
	// Transport fetches from the indexes; nil: a direct one (no proxy)
	// with the system's certificate roots that dials through Net. A test
	// that sets it bypasses Net.
	Transport http.RoundTripper

	once    sync.Once
	direct  *http.Transport
	mu      sync.Mutex
	fetched []Fetched
	tunnels map[net.Conn]bool
}

// New makes a door to indexes that writes its refusals to buildLog.
func New(buildLog io.Writer, indexes ...Index) (*Door, error) {
	d := &Door{log: buildLog, tunnels: map[net.Conn]bool{}}
	for _, ix := range indexes {
		x, err := parseIndex(ix)
		if err != nil {
			return nil, fmt.Errorf("package index: %w", err)
		}
		d.indexes = append(d.indexes, x)
	}
	return d, nil
}

// BuildURL is the URL the build uses for the i-th index: through the door,
// without credentials.
func (d *Door) BuildURL(i int) string { return d.indexes[i].buildURL }

// Host is the i-th index's host:port, as the build names it.
func (d *Door) Host(i int) string { return d.indexes[i].hostport }

// Fetched lists the distributions that came through the door, once per
// file, in the order they first came. envs names the build's
// environments in the order the build made them, each of which installs
// its requirements through the door (python -m build --sdist --wheel:
// "sdist", then "wheel"); each entry says which asked for it. An
// environment fetches a file once (pip runs without a cache), so a file
// fetched again is the next environment's start.
func (d *Door) Fetched(envs ...string) []Fetched {
	d.mu.Lock()
	defer d.mu.Unlock()
	return provenance(d.fetched, envs)
}

func provenance(fetched []Fetched, envs []string) []Fetched {
	var out []Fetched
	at := map[string]int{} // file → index in out
	env := 0
	seen := map[string]bool{} // files of the current environment
	for _, f := range fetched {
		key := f.File + "\x00" + f.SHA256
		if seen[key] && env+1 < len(envs) {
			env++
			seen = map[string]bool{}
		}
		seen[key] = true
		i, ok := at[key]
		if !ok {
			i = len(out)
			at[key] = i
			f.Environments = nil
			out = append(out, f)
		}
		if env < len(envs) && !slices.Contains(out[i].Environments, envs[env]) {
			out[i].Environments = append(out[i].Environments, envs[env])
		}
	}
	return out
}

// Serve answers the build's connections on l until l is closed (the build
// is over), then closes every connection still open.
func (d *Door) Serve(l net.Listener) error {
	srv := &http.Server{Handler: d, ReadHeaderTimeout: time.Minute, ErrorLog: log.New(io.Discard, "", 0)}
	_ = srv.Serve(l)
	_ = srv.Close()
	if t, ok := d.transport().(*http.Transport); ok {
		t.CloseIdleConnections()
	}
	d.mu.Lock()
	for c := range d.tunnels {
		c.Close()
	}
	d.mu.Unlock()
	return nil
}

// ServeHTTP implements http.Handler.
func (d *Door) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		d.tunnel(w, r)
		return
	}
	if !r.URL.IsAbs() {
		d.refuse(w, r.Method+" "+r.URL.String(), "the door is a proxy: set HTTP_PROXY, not the index's address")
		return
	}
	target := r.URL.Host
	if r.URL.Port() == "" {
		target = net.JoinHostPort(r.URL.Hostname(), "80")
	}
	shown := shown(r)
	if r.URL.Scheme != "http" {
		d.refuse(w, shown, "ask for http://HOST:PORT/…; the door speaks the index's own scheme")
		return
	}
	x := d.find(target)
	if x == nil {
		d.refuse(w, shown, "only "+d.allowed()+" is reachable")
		return
	}
	if !below(r.URL.Path, x.prefix) {
		d.refuse(w, shown, "only paths below "+x.shown+" are reachable on "+x.hostport)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		d.refuse(w, shown, "package indexes are read with GET and HEAD only")
		return
	}
	d.forward(w, r, x)
}

func (d *Door) find(hostport string) *index {
	for _, x := range d.indexes {
		if strings.EqualFold(x.hostport, hostport) {
			return x
		}
	}
	return nil
}

func (d *Door) allowed() string {
	var s []string
	for _, x := range d.indexes {
		s = append(s, x.shown)
	}
	return strings.Join(s, " and ")
}

// below reports whether p stays below prefix with no dot segments that an
// index server could resolve out of it.
func below(p, prefix string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." || seg == "." {
			return false
		}
	}
	return strings.HasPrefix(p, prefix)
}

func (d *Door) refuse(w http.ResponseWriter, what, why string) {
	fmt.Fprintf(d.log, "==> door: refused %s: %s\n", what, why)
	http.Error(w, "pkgfleet door: refused "+what+": "+why, http.StatusForbidden)
}

// hopHeaders are a connection's own and never forwarded; Authorization and
// Cookie from the build are dropped too: the door alone authenticates.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Authorization", "Cookie"}

func (d *Door) forward(w http.ResponseWriter, r *http.Request, x *index) {
	up, err := http.NewRequestWithContext(r.Context(), r.Method, x.scheme+"://"+x.hostport+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, "pkgfleet door: "+err.Error(), http.StatusBadRequest)
		return
	}
	up.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		up.Header.Del(h)
	}
	if x.auth != "" {
		up.Header.Set("Authorization", x.auth)
	}
	rt := d.Transport
	if rt == nil {
		rt = d.transport()
	}
	resp, err := rt.RoundTrip(up)
	if d.refused(w, shown(r), err) {
		return
	}
	if err != nil {
		fmt.Fprintf(d.log, "==> door: %s %s%s: %v\n", r.Method, x.hostport, r.URL.Path, unwrapURL(err))
		http.Error(w, "pkgfleet door: the index did not answer", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	w.WriteHeader(resp.StatusCode)
	name, version, isDist := distribution(x.kind, path.Base(r.URL.Path))
	if !isDist || resp.StatusCode != http.StatusOK || r.Method != http.MethodGet {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), resp.Body)
	if err != nil || (resp.ContentLength >= 0 && n != resp.ContentLength) {
		return // not all of it: not what the build installed
	}
	if x.kind == Python {
		name = pkgmeta.NormalizeName(name) // a wheel's file says poetry_core
	}
	d.mu.Lock()
	d.fetched = append(d.fetched, Fetched{Name: name, Version: version, File: path.Base(r.URL.Path),
		SHA256: hex.EncodeToString(h.Sum(nil))})
	d.mu.Unlock()
}

// unwrapURL drops url.Error's repetition of the URL.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// transport is the door's own: direct, dialled through its policy.
func (d *Door) transport() http.RoundTripper {
	d.once.Do(func() {
		d.direct = &http.Transport{
			Proxy:                 nil,
			DialContext:           d.Net.DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 2 * time.Minute,
			MaxIdleConnsPerHost:   4,
		}
	})
	return d.direct
}

// refused answers a connection the outbound policy refused (403, and its
// one-line reason in the build log); false when err is no refusal.
func (d *Door) refused(w http.ResponseWriter, what string, err error) bool {
	var re *netpolicy.RefusedError
	if !errors.As(err, &re) {
		return false
	}
	d.refuse(w, what, "package index "+re.Error())
	return true
}

func shown(r *http.Request) string {
	if r.Method == http.MethodConnect {
		return "CONNECT " + r.Host
	}
	return r.Method + " " + r.URL.Redacted()
}

// tunnel opens a CONNECT tunnel to an https index.
func (d *Door) tunnel(w http.ResponseWriter, r *http.Request) {
	target := r.Host
	x := d.find(target)
	if x == nil || x.scheme != "https" {
		d.refuse(w, "CONNECT "+target, "only "+d.allowed()+" is reachable")
		return
	}
	up, err := d.Net.DialContext(r.Context(), "tcp", x.hostport)
	if d.refused(w, shown(r), err) {
		return
	}
	if err != nil {
		fmt.Fprintf(d.log, "==> door: CONNECT %s: %v\n", x.hostport, err)
		http.Error(w, "pkgfleet door: the index did not answer", http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "pkgfleet door: no tunnel", http.StatusInternalServerError)
		return
	}
	down, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	d.mu.Lock()
	d.tunnels[up], d.tunnels[down] = true, true
	d.mu.Unlock()
	defer func() {
		up.Close()
		down.Close()
		d.mu.Lock()
		delete(d.tunnels, up)
		delete(d.tunnels, down)
		d.mu.Unlock()
	}()
	_, _ = io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, buf) // what the client sent after CONNECT, then the rest
		if tc, ok := up.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(down, up)
	down.Close()
	<-done
}

// distribution reads a package's name and version from a file an index
// serves: a wheel or sdist (Python), a source tarball (R). Anything else
// (index pages, PACKAGES) is no distribution.
func distribution(kind, file string) (name, version string, ok bool) {
	switch kind {
	case Python:
		if stem, found := strings.CutSuffix(file, ".whl"); found {
			parts := strings.Split(stem, "-")
			if len(parts) >= 5 {
				return parts[0], parts[1], true
			}
			return "", "", false
		}
		for _, ext := range []string{".tar.gz", ".zip", ".tar.bz2"} {
			if stem, found := strings.CutSuffix(file, ext); found {
				i := strings.LastIndexByte(stem, '-')
				if i > 0 {
					return stem[:i], stem[i+1:], true
				}
			}
		}
	case R:
		if stem, found := strings.CutSuffix(file, ".tar.gz"); found {
			if n, v, ok := strings.Cut(stem, "_"); ok && n != "" && v != "" {
				return n, v, true
			}
		}
	}
	return "", "", false
}
