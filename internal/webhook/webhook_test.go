package webhook

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
)

// Unit tests of the pure parts; deliveries to real receivers through the
// API are tested in internal/api (outhooks_test.go).

func TestEventsAreFailureRecoveryOrAPlainBuild(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ last, status, want string }{
		{"", apiv1.StatusFailed, apiv1.EventFailure},
		{apiv1.StatusFailed, apiv1.StatusFailed, apiv1.EventFailure},
		{apiv1.StatusFailed, apiv1.StatusSucceeded, apiv1.EventRecovery},
		{apiv1.StatusSucceeded, apiv1.StatusSucceeded, apiv1.EventBuild},
		{"", apiv1.StatusSucceeded, apiv1.EventBuild},
		{apiv1.StatusFailed, apiv1.StatusCanceled, apiv1.EventBuild},
	} {
		if got := eventOf(c.last, c.status); got != c.want {
			t.Errorf("after %q, %q is %q, want %q", c.last, c.status, got, c.want)
		}
	}
}

func TestBackoffDoublesAndIsCapped(t *testing.T) {
	t.Parallel()
	d := &Dispatcher{}
	if d.backoff(1) != 10*time.Second || d.backoff(2) != 20*time.Second || d.backoff(4) != 80*time.Second {
		t.Errorf("backoff 1, 2, 4 = %s %s %s, want 10s 20s 80s", d.backoff(1), d.backoff(2), d.backoff(4))
	}
	if d.backoff(100) > 2*time.Hour {
		t.Errorf("backoff(100) = %s, want capped", d.backoff(100))
	}
}

func TestListedURLsKeepOnlyTheirOrigin(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"https://hooks.slack.com/services/T0/B0/XXXX": "https://hooks.slack.com/…",
		"https://ci.example.com:8443/?token=x":        "https://ci.example.com:8443/…",
		"http://ci.example.com/":                      "http://ci.example.com",
		"::":                                          "(invalid URL)",
	} {
		if got := RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestCheckURLRefusesWhatThePolicyRefuses(t *testing.T) {
	t.Parallel()
	p := &netpolicy.Policy{Lookup: func(_ context.Context, host string) ([]netip.Addr, error) {
		if host == "inside.example" {
			return []netip.Addr{netip.MustParseAddr("10.0.0.5")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
	}}
	var refused *netpolicy.RefusedError
	if err := CheckURL(context.Background(), p, "https://inside.example/hook"); !errors.As(err, &refused) {
		t.Errorf("a name resolving to a private address: %v, want refused", err)
	}
	if err := CheckURL(context.Background(), p, "https://outside.example/hook"); err != nil {
		t.Errorf("a public name: %v", err)
	}
	allow, _ := netpolicy.New([]string{"10.0.0.0/8"})
	allow.Lookup = p.Lookup
	if err := CheckURL(context.Background(), allow, "https://inside.example/hook"); err != nil {
		t.Errorf("a private address Git.AllowedHosts allows: %v", err)
	}
}
