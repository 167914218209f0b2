package git

import "testing"

func TestURLEndpointNamesWhereGitConnects(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"https://github.com/r/shiny.git":       "https://github.com:443",
		"https://GitHub.com:8443/r/x":          "https://github.com:8443",
		"ssh://git@example.org:2222/r/pkg.git": "ssh://example.org:2222",
		"ssh://example.org/r/pkg.git":          "ssh://example.org:22",
		"git@github.com:user/example.git":      "ssh://github.com:22",
		"https://[::1]:8443/x.git":             "https://[::1]:8443",
		"https://127.0.0.1/x.git":              "https://127.0.0.1:443",
		"git://example.org/pkg.git":            "git://example.org:9418",
	} {
		e, err := URLEndpoint(raw)
		if err != nil || e.String() != want {
			t.Errorf("URLEndpoint(%q) = %v, %v; want %s", raw, e, err, want)
		}
	}
	for _, raw := range []string{"https://ex%61mple.com/x", "https://evil.example?x@git.example.com/r.git", "ssh://evil.example#@git.example.com/r", "https://evil.example\\@git.example.com/x", "https://h:0443/x", "https://h:99999/x", "file:///srv/x", "https://bücher.example/x", "https://[fe80::1%25eth0]/x", "nohost"} {
		if e, err := URLEndpoint(raw); err == nil {
			t.Errorf("URLEndpoint(%q) = %v, want an error", raw, e)
		}
	}
}

func TestHostPatternsMatchOneHostOrOneSubdomainLabel(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"git.example.com":             "https://git.example.com:443",
		"https://Git.Example.com:443": "https://git.example.com:443",
		"*.example.com:8443":          "https://*.example.com:8443",
		"ssh://git.example.com":       "ssh://git.example.com:22",
		"[::1]:8443":                  "https://[::1]:8443",
		"127.0.0.1":                   "https://127.0.0.1:443",
	} {
		p, err := ParseHostPattern(in, "https")
		if err != nil || p.String() != want {
			t.Errorf("ParseHostPattern(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, bad := range []string{"", "http://h", "h/path", "u@h", "*.com", "a.*.example.com", "*.127.0.0.1", "h:", "h:x", "h:70000", "ex%61mple.com", "example.com.", "bücher.example", "*"} {
		if p, err := ParseHostPattern(bad, "https"); err == nil {
			t.Errorf("ParseHostPattern(%q) = %v, want an error", bad, p)
		}
	}
	wild, _ := ParseHostPattern("*.example.com", "https")
	exact, _ := ParseHostPattern("git.example.com", "https")
	for _, tc := range []struct {
		p    HostPattern
		url  string
		want bool
	}{
		{wild, "https://git.example.com/x", true},
		{wild, "https://example.com/x", false},
		{wild, "https://a.b.example.com/x", false},
		{wild, "https://evilexample.com/x", false},
		{wild, "https://git.example.com:444/x", false},
		{exact, "https://git.example.com/x", true},
		{exact, "https://git.example.com:443/x", true},
		{exact, "ssh://git.example.com/x", false},
		{exact, "https://git.example.com.evil.org/x", false},
	} {
		e, err := URLEndpoint(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := tc.p.Match(e); got != tc.want {
			t.Errorf("%s matches %s = %v, want %v", tc.p, tc.url, got, tc.want)
		}
	}
}
