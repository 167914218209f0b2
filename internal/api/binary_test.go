package api

import (
	"strings"
	"testing"
)

// binary is a default of a git source and a setting of an R builder, where
// null puts it back to the source's default; Python sources and builders
// refuse it (a wheel is already a binary).
func TestBinaryIsAnRSourceDefaultAndAnRBuilderSetting(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	if code, out := h.req("POST", "/api/v1/sources", `{"name":"py","type":"git-python","binary":true}`, ""); code != 400 || !strings.Contains(out, "binary applies to git (R) sources only") {
		t.Errorf("binary Python source: %d %q", code, out)
	}
	h.req("POST", "/api/v1/sources", `{"name":"py","type":"git-python"}`, "")
	if code, out := h.req("POST", "/api/v1/sources", `{"name":"r","type":"git","binary":true}`, ""); code != 201 || !strings.Contains(out, `"binary": true`) {
		t.Fatalf("binary R source: %d %s", code, out)
	}
	if code, out := h.req("POST", "/api/v1/sources/py/git-builders", `{"name":"b","url":"https://127.0.0.1:9/x.git","binary":true}`, ""); code != 400 || !strings.Contains(out, "binary applies to git (R) builders only") {
		t.Errorf("binary Python builder: %d %q", code, out)
	}
	if code, out := h.req("POST", "/api/v1/sources/r/git-builders", `{"name":"b","url":"https://127.0.0.1:9/x.git","binary":false}`, ""); code != 201 || !strings.Contains(out, `"binary": false`) {
		t.Fatalf("builder with binary false: %d %s", code, out)
	}
	if code, out := h.req("PATCH", "/api/v1/sources/r/git-builders/b", `{"binary":null}`, ""); code != 200 || strings.Contains(out, `"binary"`) {
		t.Errorf("binary null (the source's default): %d %s", code, out)
	}
	if code, out := h.req("PATCH", "/api/v1/sources/r/git-builders/b", `{"binary":true}`, ""); code != 200 || !strings.Contains(out, `"binary": true`) {
		t.Errorf("binary true: %d %s", code, out)
	}
	if code, out := h.req("PATCH", "/api/v1/sources/r/git-builders/b", `{"url":"https://127.0.0.1:9/y.git"}`, ""); code != 200 || !strings.Contains(out, `"binary": true`) {
		t.Errorf("binary kept across an edit of another field: %d %s", code, out)
	}
}
