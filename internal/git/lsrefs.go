package git

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
)

// Listing a remote without starting a process. A poll is a listing, and
// `git ls-remote` costs two processes and about 40 ms of CPU each time
// (BENCHMARKS.md); an https remote's smart-HTTP ref advertisement read
// here costs a fraction of that, and a local repository's ref files
// less. Whatever these readers do not cover (ssh, git://, a dumb-HTTP
// server, client certificates, a repository laid out otherwise) falls
// back to git ls-remote, as does everything when Client.ListWithGit.

// listingLimit bounds the bytes of one remote's advertisement (and so the
// memory of one listing): a package's repository advertises kilobytes.
const listingLimit = 32 << 20

// errFallback is a listing this file does not do: git ls-remote does it.
var errFallback = errors.New("listed by git ls-remote")

func (c *Client) listingBudget() int64 {
	if c.MaxFetchSize > 0 && c.MaxFetchSize < listingLimit {
		return c.MaxFetchSize
	}
	return listingLimit
}

// getenv is name as a git process this client starts would see it: the
// process environment, then Env, the last one winning.
func (c *Client) getenv(name string) (string, bool) {
	for i := len(c.Env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(c.Env[i], name+"="); ok {
			return v, true
		}
	}
	return os.LookupEnv(name)
}

// tlsConfig is the TLS git's curl would use as far as the environment
// says: GIT_SSL_CAINFO's roots instead of the system's, and no
// verification under GIT_SSL_NO_VERIFY (which git reads by presence).
// Client certificates and a CA directory are left to git.
func (c *Client) tlsConfig() (*tls.Config, error) {
	for _, name := range []string{"GIT_SSL_CAPATH", "GIT_SSL_CERT", "GIT_SSL_KEY", "GIT_SSL_CIPHER_LIST", "GIT_SSL_VERSION"} {
		if _, ok := c.getenv(name); ok {
			return nil, errFallback
		}
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if _, ok := c.getenv("GIT_SSL_NO_VERIFY"); ok {
		conf.InsecureSkipVerify = true
	}
	if file, ok := c.getenv("GIT_SSL_CAINFO"); ok && file != "" {
		pem, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("GIT_SSL_CAINFO: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("GIT_SSL_CAINFO %s holds no certificate", file)
		}
	}
	return conf, nil
}

// boundAuth adds the client's https credential to the requests whose
// scheme, host and port its hosts allow, and to no other: the same
// binding the credential helper makes for git (auth.go).
type boundAuth struct {
	next http.RoundTripper
	auth *Auth
}

func (b *boundAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	if b.auth != nil && b.auth.PrivateKey == "" {
		if e, err := URLEndpoint(req.URL.String()); err == nil && b.auth.allows(e) {
			req = req.Clone(req.Context())
			req.SetBasicAuth(b.auth.Username, b.auth.Password)
		}
	}
	return b.next.RoundTrip(req)
}

func (a *Auth) allows(e Endpoint) bool {
	for _, h := range a.Hosts {
		if h.Match(e) {
			return true
		}
	}
	return false
}

// lsRemoteHTTP lists an https remote with the smart protocol: GET
// info/refs (asking for protocol v2) and, from a v2 server, one ls-refs
// request for HEAD, branches and tags. Every connection is dialled
// through the outbound policy, on the address it resolves to; a redirect
// is followed only to the same scheme, host and port (git follows one to
// anywhere, then asks its credential helper afresh); the credential goes
// only to its hosts.
func (c *Client) lsRemoteHTTP(ctx context.Context, repoURL string) (*Refs, error) {
	conf, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	start, err := URLEndpoint(repoURL)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:                  nil, // the policy dials; no proxy of the environment
		DialContext:            c.Net.DialContext,
		TLSClientConfig:        conf,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{
		Transport: &boundAuth{next: tr, auth: c.auth},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if e, err := URLEndpoint(req.URL.String()); err != nil || e != start {
				return &listError{say: "the remote redirected to another host", detail: fmt.Sprintf("to %s://%s", req.URL.Scheme, req.URL.Host)}
			}
			if len(via) >= 5 {
				return &listError{say: "the remote redirected too often", detail: req.URL.String()}
			}
			return nil
		},
	}
	base := strings.TrimSuffix(repoURL, "/")
	budget := c.listingBudget()
	col := newRefCollector()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/info/refs?service=git-upload-pack", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Git-Protocol", "version=2")
	req.Header.Set("User-Agent", "git/pkgfleet") // servers speak the smart protocol to git/* agents
	req.Header.Set("Pragma", "no-cache")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, requestFailed(err)
	}
	defer resp.Body.Close()
	if err := statusError(resp); err != nil {
		return nil, err
	}
	if resp.Header.Get("Content-Type") != "application/x-git-upload-pack-advertisement" {
		return nil, errFallback // a dumb server: git reads it
	}
	// Later requests go where the first was redirected, as git's do.
	base = strings.TrimSuffix(resp.Request.URL.String(), "/info/refs?service=git-upload-pack")
	ad, err := readInfoRefs(resp.Body, budget, col)
	if err != nil || !ad.v2 {
		return col.done(), err
	}
	resp.Body.Close()

	req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/git-upload-pack", strings.NewReader(lsRefsRequest(ad)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Git-Protocol", "version=2")
	req.Header.Set("User-Agent", "git/pkgfleet")
	req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
	req.Header.Set("Accept", "application/x-git-upload-pack-result")
	resp, err = hc.Do(req)
	if err != nil {
		return nil, requestFailed(err)
	}
	defer resp.Body.Close()
	if err := statusError(resp); err != nil {
		return nil, err
	}
	if err := readLsRefs(resp.Body, budget, col); err != nil {
		return nil, err
	}
	return col.done(), nil
}

// requestFailed is a request's failure as Explain may show it: the
// redirect's refusal, the policy's, a name that does not resolve, a
// connection refused or a time-out as they are (Explain names them), a
// certificate refused in those words; anything else (an HTTP answer that
// is none, carrying the server's bytes) as a fixed message, its text for
// the log only.
func requestFailed(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // without "Get <url>:"
	}
	var (
		le   *listError
		re   *netpolicy.RefusedError
		dns  *net.DNSError
		op   *net.OpError
		cert *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &le), errors.As(err, &re), errors.As(err, &dns), errors.As(err, &op),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return err
	case errors.As(err, &cert):
		return &listError{say: "the remote's TLS certificate was not accepted", detail: err.Error(), err: err}
	}
	return &listError{say: sayRead, detail: err.Error(), err: err}
}

// statusError is an HTTP answer other than 200, as git would explain it.
func statusError(resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return &listError{say: sayAuth, detail: "HTTP " + resp.Status}
	case http.StatusNotFound:
		return &listError{say: sayNoRepo, detail: "HTTP " + resp.Status}
	}
	return &listError{say: "the remote answered with an HTTP error", detail: "HTTP " + resp.Status}
}

// lsRemoteFile lists a local repository (a file:// URL) by reading its
// ref files: HEAD, packed-refs and the loose refs under refs/heads and
// refs/tags, peeling annotated tags through packed-refs' peeled lines or
// the loose tag object. Nothing in the repository runs and its config is
// not read, beyond refusing a ref storage other than files. A layout it
// does not know (a .git file, a linked worktree, reftable, a tag object
// only in a pack) goes to git.
func (c *Client) lsRemoteFile(repoURL string) (*Refs, error) {
	u, err := url.Parse(repoURL)
	if err != nil {
		return nil, err
	}
	dir := filepath.Clean(u.Path)
	gitDir := filepath.Join(dir, ".git")
	if fi, err := os.Lstat(gitDir); err != nil || !fi.IsDir() {
		gitDir = dir // a bare repository, or not a repository: git says which
	}
	for _, name := range []string{"commondir", "reftable"} {
		if _, err := os.Lstat(filepath.Join(gitDir, name)); err == nil {
			return nil, errFallback
		}
	}
	head, err := readSmall(filepath.Join(gitDir, "HEAD"))
	if err != nil {
		return nil, errFallback
	}
	if cfg, err := readSmall(filepath.Join(gitDir, "config")); err != nil || bytes.Contains(bytes.ToLower(cfg), []byte("refstorage")) {
		return nil, errFallback
	}
	refs := map[string]string{}   // ref → sha, or "ref: target" of a symbolic one
	packed := map[string]bool{}   // refs whose value is packed-refs'
	peeled := map[string]string{} // packed tag ref → commit, when a tag object
	if file, err := os.ReadFile(filepath.Join(gitDir, "packed-refs")); err == nil {
		if len(file) > listingLimit {
			return nil, errTooManyRefs
		}
		last := ""
		for i, line := range bytes.Split(file, []byte{'\n'}) {
			switch {
			case i == 0:
				// "peeled" (or "fully-peeled") says every packed tag ref
				// that names a tag object has its ^ line; without it the
				// tag objects, packed most likely, would need reading.
				traits := bytes.Fields(line)
				if !bytes.HasPrefix(line, []byte("# pack-refs with:")) ||
					!slices.ContainsFunc(traits, func(t []byte) bool { return string(t) == "peeled" || string(t) == "fully-peeled" }) {
					return nil, errFallback
				}
			case len(line) == 0:
			case line[0] == '^':
				if !validSHA(line[1:]) || last == "" {
					return nil, errFallback
				}
				peeled[last] = string(line[1:])
			default:
				sha, name, ok := bytes.Cut(line, []byte{' '})
				if !ok || !validSHA(sha) {
					return nil, errFallback
				}
				last = string(name)
				refs[last] = string(sha)
				packed[last] = true
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, errFallback
	}
	for _, top := range []string{"refs/heads", "refs/tags"} {
		root := filepath.Join(gitDir, filepath.FromSlash(top))
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := readSmall(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(gitDir, p)
			name := filepath.ToSlash(rel)
			b = bytes.TrimSpace(b)
			switch {
			case validSHA(b):
				refs[name] = string(b)
			case bytes.HasPrefix(b, []byte("ref: ")):
				refs[name] = string(b)
			default:
				return nil // anything else is no ref, as git reads it
			}
			delete(packed, name) // the loose ref is newer than the packed one
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, errFallback
		}
	}
	resolve := func(name string) (string, bool) {
		for range 5 {
			v, ok := refs[name]
			if !ok {
				return "", false
			}
			target, sym := strings.CutPrefix(v, "ref: ")
			if !sym {
				return v, true
			}
			name = target
		}
		return "", false
	}
	col := newRefCollector()
	if target, ok := bytes.CutPrefix(bytes.TrimSpace(head), []byte("ref: ")); ok {
		if _, born := resolve(string(target)); born {
			col.head(string(target))
		}
	}
	for name := range refs {
		sha, ok := resolve(name)
		if !ok {
			continue // a dangling symbolic ref: git lists nothing for it
		}
		col.ref(name, sha)
		if !strings.HasPrefix(name, "refs/tags/") {
			continue
		}
		p := peeled[name]
		if !packed[name] {
			if p, err = peelLoose(gitDir, sha); err != nil {
				return nil, err
			}
		}
		if p != "" {
			col.ref(name+"^{}", p)
		}
	}
	return col.done(), nil
}

// readSmall reads a file of a repository's metadata, refusing one larger
// than a ref or a config could reasonably be.
func readSmall(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err == nil && len(b) > 1<<20 {
		return nil, fmt.Errorf("%s is larger than 1 MiB", name)
	}
	return b, err
}

// peelLoose follows sha through loose annotated tag objects to what they
// tag; "" when sha is no tag. An object that is not loose is
// errFallback's (git reads packs).
func peelLoose(gitDir, sha string) (string, error) {
	for range 10 {
		f, err := os.Open(filepath.Join(gitDir, "objects", sha[:2], sha[2:]))
		if err != nil {
			return "", errFallback
		}
		z, err := zlib.NewReader(f)
		if err != nil {
			f.Close()
			return "", errFallback
		}
		var buf [512]byte
		n, _ := io.ReadFull(z, buf[:])
		z.Close()
		f.Close()
		hdr, body, ok := bytes.Cut(buf[:n], []byte{0})
		if !ok {
			return "", errFallback
		}
		if !bytes.HasPrefix(hdr, []byte("tag ")) {
			return "", nil
		}
		target, ok := bytes.CutPrefix(body, []byte("object "))
		if !ok || len(target) < 41 {
			return "", errFallback
		}
		end := bytes.IndexByte(target, '\n')
		if end < 0 || !validSHA(target[:end]) {
			return "", errFallback
		}
		sha = string(target[:end])
		if rest, _ := bytes.CutPrefix(target[end+1:], []byte("type ")); !bytes.HasPrefix(rest, []byte("tag")) {
			return sha, nil
		}
	}
	return "", errFallback
}
