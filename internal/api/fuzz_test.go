package api

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzDecode: request decoding either fills the struct or returns an
// error that maps to a 4xx, never a panic or a 500.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"name":"a","type":"git"}`, `{"name":`, `{"evil":1}`, `{}{}`, ``, `[]`, `{"name":5}`,
		`{"name":"a","name":"b"}`, "\xff", `{"clone_depth":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		r.Body = http.MaxBytesReader(rec, r.Body, 1<<10)
		var req struct {
			Name string `json:"name"`
			Type string `json:"type"`
			builderFields
		}
		err := decode(r, &req)
		if err == nil {
			return
		}
		var he *httpError
		var mbe *http.MaxBytesError
		if !errors.As(err, &he) && !errors.As(err, &mbe) {
			t.Fatalf("decode error %T %v would be a 500", err, err)
		}
		if he != nil && (he.status < 400 || he.status >= 500) {
			t.Fatalf("status %d for %q", he.status, body)
		}
	})
}
