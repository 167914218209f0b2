package netpolicy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
)

func TestHostFormsOfOneAddressAreOneAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ host, want string }{
		{"127.0.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.0.1.", "127.0.0.1"},
		{"[::ffff:127.0.0.1]", "127.0.0.1"},
		{"::ffff:7f00:1", "127.0.0.1"},
		{"[fe80::1%eth0]", "fe80::1"},
		{"0xa9.0xfe.0xa9.0xfe", "169.254.169.254"},
		{"0", "0.0.0.0"},
	} {
		a, ok := ParseHost(tc.host)
		if !ok || a.String() != tc.want {
			t.Errorf("ParseHost(%q) = %v %v, want %s", tc.host, a, ok, tc.want)
		}
	}
	for _, name := range []string{"example.com", "1.2.3.4.5", "256.1.1.1", "0x", "08", "1e3", "-1", "", "localhost"} {
		if a, ok := ParseHost(name); ok && name != "0x" {
			t.Errorf("ParseHost(%q) = %v, want a name", name, a)
		}
	}
}

func TestTheDefaultRefusesInternalRangesAndAllowsThePublicInternet(t *testing.T) {
	t.Parallel()
	p := &Policy{}
	for host, why := range map[string]string{
		"127.0.0.1": "loopback", "::1": "loopback", "::ffff:127.0.0.1": "loopback", "2130706433": "loopback",
		"169.254.169.254": "cloud metadata", "fd00:ec2::254": "cloud metadata", "100.100.100.200": "cloud metadata",
		"169.254.1.1": "link-local", "fe80::1": "link-local",
		"10.1.2.3": "private", "172.16.0.1": "private", "192.168.1.1": "private", "fc00::1": "private", "fd12::1": "private",
		"100.64.0.1": "CGNAT", "0.0.0.0": "unspecified", "::": "unspecified", "224.0.0.1": "multicast", "ff02::1": "multicast",
		"255.255.255.255": "reserved", "64:ff9b::7f00:1": "loopback via NAT64", "2002:a9fe:a9fe::": "cloud metadata via 6to4",
	} {
		err := p.CheckLiteral(host)
		var re *RefusedError
		if !errors.As(err, &re) || re.Why != why {
			t.Errorf("%s: %v, want refused (%s)", host, err, why)
		}
	}
	for _, host := range []string{"140.82.112.3", "2606:4700::1111", "64:ff9b::8c52:7003", "github.com"} {
		if err := p.CheckLiteral(host); err != nil {
			t.Errorf("%s: %v, want allowed", host, err)
		}
	}
}

func TestAllowedHostsOpenWhatTheyName(t *testing.T) {
	t.Parallel()
	p, err := New([]string{"10.1.0.0/16", "127.0.0.1", "git.corp.example.", "*.mirror.example", "BÜCHER.example"})
	if err != nil {
		t.Fatal(err)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		host string
		addr string
		ok   bool
	}{
		{"10.1.9.9", "10.1.9.9", true},
		{"10.2.0.1", "10.2.0.1", false},
		{"localhost", "127.0.0.1", true}, // by address
		{"localhost", "127.0.0.2", false},
		{"git.corp.example", "10.9.9.9", true},
		{"GIT.corp.example.", "10.9.9.9", true},
		{"a.mirror.example", "192.168.0.1", true},
		{"mirror.example", "192.168.0.1", false},
		{"xn--bcher-kva.example", "192.168.0.1", true},
		{"bücher.example", "192.168.0.1", true},
		{"evil.example", "10.9.9.9", false},
	} {
		err := p.Check(tc.host, "443", netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("Check(%s → %s) = %v, want allowed %v", tc.host, tc.addr, err, tc.ok)
		}
	}
	if err := p.Check("127.0.0.1", "", lo); err != nil {
		t.Error(err)
	}
	if _, err := New([]string{"http://x/"}); err == nil || !strings.Contains(err.Error(), Setting) {
		t.Errorf("a URL as an entry: %v, want an error naming %s", err, Setting)
	}
}

// A name is judged by what it resolves to when it is dialled: a name that
// resolves to loopback (DNS rebinding, or "localhost" itself) is refused
// and nothing is dialled; the reason names both.
func TestDialRefusesANameThatResolvesToLoopback(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	p := &Policy{Lookup: func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("127.0.0.1")}, nil
	}}
	_, err = p.DialContext(context.Background(), "tcp", net.JoinHostPort("rebind.example", port))
	if want := "host rebind.example:" + port + " (resolves to 127.0.0.1) is refused by the outbound policy (loopback); allow it with Git.AllowedHosts"; err == nil || err.Error() != want {
		t.Errorf("rebinding name: %v, want %q", err, want)
	}
	if _, err := (&Policy{}).DialContext(context.Background(), "tcp", net.JoinHostPort("localhost", port)); err == nil {
		t.Error("localhost was dialled")
	}
	allowed, _ := New([]string{"127.0.0.1"})
	c, err := allowed.DialContext(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatalf("allowed: %v", err)
	}
	_, _ = io.Copy(io.Discard, c) // the listener closes it
	c.Close()
	if n := accepted.Load(); n != 1 {
		t.Errorf("the listener saw %d connections, want only the allowed one", n)
	}
}
