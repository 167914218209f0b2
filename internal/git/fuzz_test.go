package git

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
)

// FuzzValidateURL: whatever it accepts can never reach git as an option or
// a transport helper, and never carries a secret.
func FuzzValidateURL(f *testing.F) {
	for _, s := range []string{
		"https://github.com/a/b.git", "git@github.com:a/b.git", "ssh://git@h:22/x", "file:///srv/r",
		"ext::sh -c id", "fd::3", "--upload-pack=x", "ssh://-oProxyCommand=x/y", "https://u:p@h/x",
		"https://h/x\n", "git@-h:x", "http://h/x", "\x00", "file://h/x",
	} {
		f.Add(s)
	}
	p := URLPolicy{AllowFile: true}
	f.Fuzz(func(t *testing.T, raw string) {
		if p.ValidateURL(raw) != nil {
			return
		}
		if strings.HasPrefix(raw, "-") || strings.Contains(raw, "::") || strings.ContainsAny(raw, " \n\r\t\x00") {
			t.Fatalf("accepted %q", raw)
		}
		if u, err := url.Parse(raw); err == nil && u.Scheme == "https" && u.User != nil {
			t.Fatalf("accepted userinfo in %q", raw)
		}
	})
}

// FuzzMatchTag: a pattern either fails cleanly or matches consistently.
func FuzzMatchTag(f *testing.F) {
	for _, s := range [][2]string{{"v*", "v1.0"}, {"release-[0-9]*", "release-2"}, {"[", "x"}, {"", "anything"}, {"v?.*", "v1.2"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, tag string) {
		ok1, err1 := MatchTag(pattern, tag)
		ok2, err2 := MatchTag(pattern, tag)
		if ok1 != ok2 || (err1 == nil) != (err2 == nil) {
			t.Fatal("MatchTag is not deterministic")
		}
		_ = ValidateRef(tag)
	})
}

// FuzzHostPatternMatch: a pattern's canonical form reads back as itself,
// and it matches a URL only on its own scheme and port, and on its own
// host or, for *.domain, a host one label below the domain.
func FuzzHostPatternMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"git.example.com", "https://git.example.com/x"}, {"*.example.com:8443", "https://a.example.com:8443/x"},
		{"ssh://[::1]:2222", "ssh://git@[::1]:2222/x"}, {"*.example.com", "https://a.b.example.com/x"},
		{"127.0.0.1", "https://2130706433/x"}, {"Git.Example.com", "https://git.example.com./x"},
		{"*.example.com", "https://ex%61mple.com/x"}, {"ssh://h", "git@h:x"}, {"h", "https://[::ffff:127.0.0.1]/x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, raw string) {
		p, err := ParseHostPattern(pattern, "https")
		if err != nil {
			return
		}
		again, err := ParseHostPattern(p.String(), "ssh")
		if err != nil || again != p {
			t.Fatalf("%q: canonical %s reads back as %v, %v", pattern, p, again, err)
		}
		e, err := URLEndpoint(raw)
		if err != nil || !p.Match(e) {
			return
		}
		if e.Scheme != p.Scheme || e.Port != p.Port {
			t.Fatalf("%s matched %s on another scheme or port", p, e)
		}
		if !p.Wildcard && e.Host != p.Host {
			t.Fatalf("%s matched %s", p, e)
		}
		if label, ok := strings.CutSuffix(e.Host, "."+p.Host); p.Wildcard && (!ok || label == "" || strings.ContainsAny(label, ".:[]%")) {
			t.Fatalf("%s matched %s", p, e)
		}
	})
}

// FuzzReadAdvertisement: whatever a server sends, reading its ref
// advertisement (v0, or v2's capabilities and ls-refs answer) ends
// without a panic, and every object name it keeps is a valid one.
func FuzzReadAdvertisement(f *testing.F) {
	sha := strings.Repeat("a", 40)
	for _, s := range []string{
		pktLine("# service=git-upload-pack\n") + "0000" + pktLine(sha+" HEAD\x00symref=HEAD:refs/heads/main agent=git\n") +
			pktLine(sha+" refs/heads/main\n") + pktLine(sha+" refs/tags/v1\n") + pktLine(sha+" refs/tags/v1^{}\n") + "0000",
		pktLine("version 2\n") + pktLine("ls-refs=unborn\n") + pktLine("object-format=sha1\n") + "0000",
		pktLine(sha+" HEAD symref-target:refs/heads/main\n") + pktLine(sha+" refs/tags/v1 peeled:"+sha+"\n") + "0000",
		pktLine(strings.Repeat("0", 40)+" capabilities^{}\x00side-band\n") + "0000",
		"ffff", "0003", "0001", pktLine("ERR no\n"), "zzzz",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, read := range []func(*refCollector) error{
			func(c *refCollector) error { _, err := readInfoRefs(bytes.NewReader(data), 1<<20, c); return err },
			func(c *refCollector) error { return readLsRefs(bytes.NewReader(data), 1<<20, c) },
		} {
			c := newRefCollector()
			if read(c) != nil {
				continue
			}
			refs := c.done()
			for name, sha := range refs.Branches {
				if !validSHA([]byte(sha)) {
					t.Fatalf("branch %q kept object name %q", name, sha)
				}
			}
			for name, sha := range refs.Tags {
				if !validSHA([]byte(sha)) {
					t.Fatalf("tag %q kept object name %q", name, sha)
				}
			}
		}
	})
}
