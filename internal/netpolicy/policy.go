// Package netpolicy owns where pkgfleet itself may connect on a user's
// behalf: git remotes (from the API and the workers) and the package
// indexes a build's door reaches. By default anything on the public
// internet is allowed and loopback, link-local, cloud metadata, private,
// CGNAT, unspecified, multicast and broadcast addresses are refused (in
// their IPv4-mapped IPv6 forms too), unless the admin allows a host, a
// domain or a CIDR with Git.AllowedHosts.
//
// The check is made on the address actually dialled, after resolution,
// by Dial (used by the door) and by Proxy (the CONNECT proxy each git
// command goes through), so neither a name that resolves to a refused
// address (DNS rebinding) nor a redirect gets round it.
//
// It does not decide which URLs a builder may name (internal/git and
// internal/door check their syntax) nor which host a credential may go to
// (internal/credential).
package netpolicy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// Setting is the setting that allows more (the one place the name is
// written for messages; internal/config declares it).
const Setting = "Git.AllowedHosts"

// refused are the ranges no connection goes to unless allowed, each with
// the word a refusal gives. Order matters: the first match names it.
var refused = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("169.254.169.254/32"), "cloud metadata"},
	{netip.MustParsePrefix("100.100.100.200/32"), "cloud metadata"}, // Alibaba
	{netip.MustParsePrefix("fd00:ec2::254/128"), "cloud metadata"},  // AWS IPv6
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("fc00::/7"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "CGNAT"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // and 255.255.255.255, broadcast
	{netip.MustParsePrefix("::/96"), "IPv4-compatible"},
}

// Policy says which addresses may be reached. The zero value, and a nil
// *Policy, refuse what the package doc lists and allow the rest; it is
// safe for concurrent use.
type Policy struct {
	nets  []netip.Prefix
	hosts []string // lower-case ASCII names; "*.example.com" allows subdomains
	// Lookup resolves a name; nil uses the system resolver. Tests set it to
	// play DNS rebinding.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// Timeout bounds one dial; 0 means 30s.
	Timeout time.Duration
}

// New builds a policy that also allows the given entries: an IP address,
// a CIDR, a host name, or "*.domain" for its subdomains.
func New(allow []string) (*Policy, error) {
	p := &Policy{}
	for _, e := range allow {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if pfx, err := netip.ParsePrefix(e); err == nil {
			p.nets = append(p.nets, pfx.Masked())
			continue
		}
		if a, ok := ParseHost(e); ok {
			p.nets = append(p.nets, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		name, wild := strings.CutPrefix(e, "*.")
		n, err := normalName(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not an address, a CIDR, a host name or *.domain", Setting, e)
		}
		if wild {
			n = "*." + n
		}
		p.hosts = append(p.hosts, n)
	}
	return p, nil
}

// normalName is host as DNS sees it: IDNA to ASCII, lower case, without
// the trailing dot.
func normalName(host string) (string, error) {
	host = strings.TrimSuffix(host, ".")
	a, err := idna.Lookup.ToASCII(host)
	if err != nil || a == "" || strings.ContainsAny(a, " /:@[]%") {
		return "", errors.New("not a host name")
	}
	return strings.ToLower(a), nil
}

// ParseHost reads host as an IP address in any form a resolver or curl
// would accept: brackets, a zone, a trailing dot, IPv4-mapped IPv6, and
// the inet_aton forms of IPv4 (1 to 4 parts, each decimal, octal with a
// leading 0 or hex with 0x: 2130706433, 0177.1, 0x7f.0.0.1). IPv4-mapped
// IPv6 comes back as IPv4, so one check covers both.
func ParseHost(host string) (netip.Addr, bool) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), true
	}
	return parseInetAton(strings.TrimSuffix(host, "."))
}

// parseInetAton reads the legacy IPv4 forms inet_aton(3) accepts.
func parseInetAton(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 || s == "" {
		return netip.Addr{}, false
	}
	var nums []uint64
	for _, p := range parts {
		base, digits := 10, p
		switch {
		case len(p) > 1 && (p[:2] == "0x" || p[:2] == "0X"):
			base, digits = 16, p[2:]
			if digits == "" {
				digits = "0" // "0x" alone is 0 to inet_aton
			}
		case len(p) > 1 && p[0] == '0':
			base, digits = 8, p[1:]
		}
		if digits == "" || strings.ContainsAny(digits, "+-_") {
			return netip.Addr{}, false
		}
		n, err := strconv.ParseUint(digits, base, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		nums = append(nums, n)
	}
	// The last part fills the bytes the others leave.
	var v uint64
	for i, n := range nums[:len(nums)-1] {
		if n > 255 {
			return netip.Addr{}, false
		}
		v |= n << (24 - 8*i)
	}
	last := nums[len(nums)-1]
	if last >= 1<<(8*(5-len(nums))) {
		return netip.Addr{}, false
	}
	v |= last
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// RefusedError is a connection the policy refused. Its text is one line
// fit for a build log and an API answer.
type RefusedError struct {
	Host string     // as asked for
	Port string     // "" when unknown
	Addr netip.Addr // the refused address (Host itself or what it resolved to)
	Why  string     // "loopback", "private", …
}

func (e *RefusedError) Error() string {
	target := e.Host
	if e.Port != "" {
		target = net.JoinHostPort(e.Host, e.Port)
	}
	via := ""
	if a, ok := ParseHost(e.Host); !ok || a != e.Addr {
		via = " (resolves to " + e.Addr.String() + ")"
	}
	return fmt.Sprintf("host %s%s is refused by the outbound policy (%s); allow it with %s", target, via, e.Why, Setting)
}

// Check says whether host (a name or an address, as asked for) may be
// reached at addr (what it resolved to).
func (p *Policy) Check(host, port string, addr netip.Addr) error {
	addr = addr.Unmap()
	if p != nil {
		if p.allowsName(host) {
			return nil
		}
		for _, n := range p.nets {
			if n.Contains(addr) {
				return nil
			}
		}
	}
	if why := Refused(addr); why != "" {
		return &RefusedError{Host: host, Port: port, Addr: addr, Why: why}
	}
	return nil
}

// Refused names the range that refuses addr by default, "" if none does.
func Refused(addr netip.Addr) string {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return "invalid"
	}
	for _, r := range refused {
		if r.prefix.Contains(addr) {
			return r.why
		}
	}
	// NAT64 and 6to4 addresses carry an IPv4 address a gateway connects
	// to: they are as refused as that address.
	b := addr.As16()
	switch {
	case nat64.Contains(addr):
		if why := Refused(netip.AddrFrom4([4]byte(b[12:16]))); why != "" {
			return why + " via NAT64"
		}
	case sixToFour.Contains(addr):
		if why := Refused(netip.AddrFrom4([4]byte(b[2:6]))); why != "" {
			return why + " via 6to4"
		}
	}
	return ""
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

func (p *Policy) allowsName(host string) bool {
	if len(p.hosts) == 0 {
		return false
	}
	if _, isIP := ParseHost(host); isIP {
		return false
	}
	n, err := normalName(host)
	if err != nil {
		return false
	}
	for _, h := range p.hosts {
		if suffix, wild := strings.CutPrefix(h, "*"); wild {
			if strings.HasSuffix(n, suffix) {
				return true
			}
		} else if n == h {
			return true
		}
	}
	return false
}

// CheckLiteral checks a host that is an IP literal, the part of the
// policy that can be decided without resolving (a builder's index URL at
// creation); a name passes here and is checked at connect time.
func (p *Policy) CheckLiteral(host string) error {
	a, ok := ParseHost(host)
	if !ok {
		return nil
	}
	return p.Check(host, "", a)
}

// Resolve returns the addresses of host that a connection may use: all of
// them, or a *RefusedError if any is refused (a name with one refused
// address is not trusted with the others).
func (p *Policy) Resolve(ctx context.Context, host, port string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	if a, ok := ParseHost(host); ok {
		addrs = []netip.Addr{a}
	} else {
		name, err := normalName(host)
		if err != nil {
			return nil, fmt.Errorf("host %q: %w", host, err)
		}
		lookup := func(ctx context.Context, h string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", h)
		}
		if p != nil && p.Lookup != nil {
			lookup = p.Lookup
		}
		if addrs, err = lookup(ctx, name); err != nil {
			return nil, err
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("host %s has no address", host)
		}
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
		if err := p.Check(host, port, addrs[i]); err != nil {
			return nil, err
		}
	}
	return addrs, nil
}

// DialContext connects to address (host:port) on network ("tcp"): it
// resolves host, checks every address and dials the checked ones, so the
// name is resolved once and the policy judges what is connected to.
func (p *Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	addrs, err := p.Resolve(ctx, host, port)
	if err != nil {
		return nil, err
	}
	timeout := 30 * time.Second
	if p != nil && p.Timeout != 0 {
		timeout = p.Timeout
	}
	d := net.Dialer{Timeout: timeout}
	var errs []error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}
