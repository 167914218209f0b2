package api

import (
	"strings"
	"testing"
)

// TestHostileEditsRerunsAndArtifactPathsAre4xxAndStoreNothing covers what
// TestHostileRequestsAre4xxAndStoreNothing does not: hostile values on an
// existing builder (PATCH, rerun by tag or branch) and path traversal in
// artifact names. Nothing may be stored or queued.
func TestHostileEditsRerunsAndArtifactPathsAre4xxAndStoreNothing(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	for _, r := range [][2]string{
		{"/api/v1/sources", `{"name":"src","type":"git"}`},
		{"/api/v1/sources/src/git-builders", `{"name":"b","url":"https://example.invalid/r.git"}`},
	} {
		if code, body := h.req("POST", r[0], r[1], ""); code != 201 {
			t.Fatalf("POST %s: %d %s", r[0], code, body)
		}
	}
	before := strings.Join(h.keys(), " ")
	cases := []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"patch file url not allowed", "PATCH", "/api/v1/sources/src/git-builders/b", `{"url":"file:///srv/r"}`, 400, "Git.AllowFileURLs"},
		{"patch ext url", "PATCH", "/api/v1/sources/src/git-builders/b", `{"url":"ext::sh -c id"}`, 400, ""},
		{"patch dash url", "PATCH", "/api/v1/sources/src/git-builders/b", `{"url":"--upload-pack=touch /tmp/x"}`, 400, "'-'"},
		{"patch proxycommand", "PATCH", "/api/v1/sources/src/git-builders/b", `{"url":"ssh://-oProxyCommand=x/y"}`, 400, "'-'"},
		{"patch dash branch", "PATCH", "/api/v1/sources/src/git-builders/b", `{"branch":"-x"}`, 400, "'-'"},
		{"patch sub_dir traversal", "PATCH", "/api/v1/sources/src/git-builders/b", `{"sub_dir":"../../etc"}`, 400, "'..'"},
		{"patch newline branch", "PATCH", "/api/v1/sources/src/git-builders/b", `{"branch":"main\nx"}`, 400, ""},
		{"patch unknown field", "PATCH", "/api/v1/sources/src/git-builders/b", `{"evil":1}`, 400, `unknown field "evil"`},
		{"rerun dash tag", "POST", "/api/v1/sources/src/git-builders/b/rerun", `{"tag":"--upload-pack=touch /tmp/x"}`, 400, ""},
		{"rerun dash branch", "POST", "/api/v1/sources/src/git-builders/b/rerun", `{"branch":"-x"}`, 400, ""},
		{"rerun nul tag", "POST", "/api/v1/sources/src/git-builders/b/rerun", `{"tag":"v1\u0000x"}`, 400, ""},
		{"rerun dash sha", "POST", "/api/v1/sources/src/git-builders/b/rerun", `{"commit_sha":"-abc"}`, 400, "sha"},
		{"artifact traversal", "GET", "/api/v1/builds/1/artifacts/..%2F..%2F..%2Fetc%2Fpasswd", ``, 0, ""},
		{"artifact dotdot", "GET", "/api/v1/builds/1/artifacts/..", ``, 0, ""},
		{"log of missing build", "GET", "/api/v1/builds/1/log", ``, 404, ""},
	}
	for _, tc := range cases {
		code, body := h.req(tc.method, tc.path, tc.body, "")
		if tc.code == 0 { // any 4xx, and never a file's content
			if code < 400 || code >= 500 || strings.Contains(body, "root:") {
				t.Errorf("%s: %d %s, want a 4xx", tc.name, code, body)
			}
			continue
		}
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %d containing %q", tc.name, code, body, tc.code, tc.want)
		}
	}
	if after := strings.Join(h.keys(), " "); after != before {
		t.Fatalf("hostile requests stored or queued something:\nbefore %s\nafter  %s", before, after)
	}
}
