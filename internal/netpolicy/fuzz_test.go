package netpolicy

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzCheckHost: however an address is written (inet_aton forms, IPv4-mapped
// IPv6, brackets, a trailing dot, upper case, IDNA), the policy judges the
// address, not the spelling: every spelling of a refused address is
// refused, and an allowed name stays allowed in every spelling.
func FuzzCheckHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "::ffff:127.0.0.1", "[::1]",
		"169.254.169.254.", "fe80::1%lo", "10.0.0.1", "bücher.example", "xn--bcher-kva.example", "Example.COM.", "0", "08.1"} {
		f.Add(s)
	}
	p, err := New([]string{"bücher.example", "10.0.0.0/8"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, host string) {
		a, isIP := ParseHost(host)
		if !isIP {
			// A name: its spellings agree on whether it is allowed.
			if n, err := normalName(host); err == nil {
				if p.allowsName(host) != p.allowsName(strings.ToUpper(n)+".") {
					t.Errorf("%q and %q disagree", host, strings.ToUpper(n)+".")
				}
			}
			return
		}
		if a.Is4In6() {
			t.Fatalf("ParseHost(%q) = %v: mapped form not unmapped", host, a)
		}
		refused := p.CheckLiteral(host) != nil
		want := Refused(a) != "" && !netip.MustParsePrefix("10.0.0.0/8").Contains(a)
		if refused != want {
			t.Fatalf("CheckLiteral(%q) refused=%v, want %v (%v)", host, refused, want, a)
		}
		if a.Is4() {
			mapped := netip.AddrFrom16(a.As16()).String()
			if (p.CheckLiteral(mapped) != nil) != refused || (p.CheckLiteral("["+mapped+"]") != nil) != refused {
				t.Fatalf("%q and its IPv4-mapped form %q disagree", host, mapped)
			}
			if (p.CheckLiteral(a.String()+".") != nil) != refused {
				t.Fatalf("%q and %q disagree", host, a.String()+".")
			}
		}
	})
}
