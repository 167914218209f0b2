package git

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Endpoint is where a repository URL makes git connect: what a
// credential's hosts are matched against.
type Endpoint struct {
	Scheme string // https or ssh
	Host   string // lower case; an IP address in its canonical form
	Port   int
}

func (e Endpoint) String() string { return joinEndpoint(e.Scheme, e.Host, e.Port) }

func joinEndpoint(scheme, host string, port int) string {
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

var defaultPorts = map[string]int{"https": 443, "ssh": 22, "git": 9418}

// hostLabels is a DNS name as git and curl take it: no percent-encoding,
// no IDNA (a non-ASCII name is refused, not converted), no trailing dot.
var hostLabels = regexp.MustCompile(`^[a-z0-9_-]+(\.[a-z0-9_-]+)*$`)

// canonicalHost lower-cases a host name and rewrites an IP address in one
// form, so that a name and its pattern compare as strings.
func canonicalHost(h string) (string, error) {
	h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return "", fmt.Errorf("host %q has a zone", h)
		}
		return a.Unmap().String(), nil
	}
	if !hostLabels.MatchString(h) || len(h) > 253 {
		return "", fmt.Errorf("host %q is not a plain DNS name or IP address", h)
	}
	return h, nil
}

func parsePort(scheme, p string) (int, error) {
	if p == "" {
		return defaultPorts[scheme], nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || p[0] == '0' {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", p)
	}
	return n, nil
}

// URLEndpoint returns the endpoint a repository URL names: ssh for the
// scp-like form user@host:path (port 22), and the scheme's default port
// when the URL gives none.
func URLEndpoint(raw string) (Endpoint, error) {
	if !strings.Contains(raw, "://") {
		m := scpLike.FindStringSubmatch(raw)
		if m == nil {
			return Endpoint{}, errors.New("url is neither scheme://host/path nor user@host:path")
		}
		h, err := canonicalHost(m[2])
		return Endpoint{Scheme: "ssh", Host: h, Port: 22}, err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Endpoint{}, fmt.Errorf("url is not valid: %v", errors.Unwrap(err))
	}
	// url.Parse decodes %XX in a host and ends it at ? or #; git, curl and
	// Go have not always read such URLs alike (older gits' credential code
	// read on to the first / and took the host after an @ there), so a URL
	// whose host they could read apart is refused rather than matched
	// under another name.
	authority, _, _ := strings.Cut(strings.SplitN(raw, "://", 2)[1], "/")
	if strings.ContainsAny(authority, "%\\?#") {
		return Endpoint{}, errors.New("url host must be a plain host[:port], without %, \\, ? or # before the path")
	}
	if _, ok := defaultPorts[u.Scheme]; !ok {
		return Endpoint{}, fmt.Errorf("url scheme %q has no network host", u.Scheme)
	}
	h, err := canonicalHost(u.Hostname())
	if err != nil {
		return Endpoint{}, err
	}
	port, err := parsePort(u.Scheme, u.Port())
	if err != nil {
		return Endpoint{}, err
	}
	return Endpoint{Scheme: u.Scheme, Host: h, Port: port}, nil
}

// HostPattern is where a credential may be sent: one scheme, one port, and
// one host or, with a leading "*.", any host one label below a domain (as
// in a TLS certificate: *.example.com matches git.example.com, not
// example.com nor a.b.example.com).
type HostPattern struct {
	Scheme   string
	Host     string // the domain, without "*.", when Wildcard
	Wildcard bool
	Port     int
}

// String is the pattern's canonical form, scheme://host:port.
func (p HostPattern) String() string {
	h := p.Host
	if p.Wildcard {
		h = "*." + h
	}
	return joinEndpoint(p.Scheme, h, p.Port)
}

// ParseHostPattern reads [scheme://]host[:port] where host may start with
// "*."; scheme defaults to defaultScheme and port to the scheme's. Only
// https and ssh carry credentials.
func ParseHostPattern(s, defaultScheme string) (HostPattern, error) {
	bad := func(why string) (HostPattern, error) {
		return HostPattern{}, fmt.Errorf("host %q %s (want [https|ssh://]host[:port], host may start with *.)", s, why)
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		scheme, rest = defaultScheme, s
	}
	if scheme != "https" && scheme != "ssh" {
		return bad("needs the scheme https or ssh")
	}
	if rest == "" || strings.ContainsAny(rest, "/?#@%\\ ") {
		return bad("must be a host and port only, no user, path or encoding")
	}
	host, port := rest, ""
	if h, p, err := net.SplitHostPort(rest); err == nil {
		if p == "" {
			return bad("has an empty port")
		}
		host, port = h, p
	} else if strings.Count(rest, ":") == 1 || strings.HasPrefix(rest, "[") && !strings.HasSuffix(rest, "]") {
		return bad("has a malformed port")
	}
	p := HostPattern{Scheme: scheme}
	if d, ok := strings.CutPrefix(host, "*."); ok {
		p.Wildcard, host = true, d
		if !strings.Contains(d, ".") {
			return bad("may wildcard a subdomain of a domain with at least two labels only")
		}
	}
	if strings.Contains(host, "*") {
		return bad("may hold a wildcard only as its first label (*.example.com)")
	}
	var err error
	if p.Host, err = canonicalHost(host); err != nil {
		return bad("is not a plain DNS name or IP address")
	}
	if _, ipErr := netip.ParseAddr(p.Host); ipErr == nil && p.Wildcard {
		return bad("cannot wildcard an IP address")
	}
	if p.Port, err = parsePort(scheme, port); err != nil {
		return bad(err.Error())
	}
	return p, nil
}

// Match reports whether the pattern allows the endpoint.
func (p HostPattern) Match(e Endpoint) bool {
	if p.Scheme != e.Scheme || p.Port != e.Port {
		return false
	}
	if !p.Wildcard {
		return p.Host == e.Host
	}
	label, ok := strings.CutSuffix(e.Host, "."+p.Host)
	return ok && label != "" && !strings.Contains(label, ".")
}
