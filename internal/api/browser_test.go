package api

// The API's browser surface (docs/security.md): what a page on another
// site, or a browser signed in with a token that has since been revoked,
// can and cannot do.

import (
	"net/url"
	"testing"
)

// TestSignInRedirectStaysOnThisSite: after sign-in the browser goes only to
// a path on this host. Browsers drop TAB, CR and LF from a Location and
// read "\" as "/", so each of the refused forms below would otherwise be a
// link to evil.example.
func TestSignInRedirectStaysOnThisSite(t *testing.T) {
	t.Parallel()
	h := setup(t, true)
	for next, want := range map[string]string{
		"/builds?x=1":             "/builds?x=1",
		"/builds/7":               "/builds/7",
		"/":                       "/",
		"":                        "/",
		"/\t/evil.example":        "/",
		"/\r\n/evil.example":      "/",
		"\t//evil.example":        "/",
		"/\x00/evil.example":      "/",
		"/\u0085/evil.example":    "/", // C1 control (NEL)
		"//evil.example":          "/",
		"/\\evil.example":         "/",
		"\\\\evil.example":        "/",
		"https://evil.example/":   "/",
		"javascript:alert(1)":     "/",
		" //evil.example":         "/",
		"/bu\tilds":               "/builds",           // the control character goes, the path stays
		"/%09/evil.example":       "/%09/evil.example", // decoded once by the form; a browser keeps %09 in the path
		"/%2F%2Fevil.example":     "/%2F%2Fevil.example",
		"/%5Cevil.example/x?y=//": "/%5Cevil.example/x?y=//",
	} {
		_, _, resp := h.page("POST", "/login", "", url.Values{"token": {h.tok["read"]}, "next": {next}})
		if got := resp.Header.Get("Location"); got != want {
			t.Errorf("sign-in with next=%q redirects to %q, want %q", next, got, want)
		}
	}
}
