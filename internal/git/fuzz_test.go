package git

import (
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
