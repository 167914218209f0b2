package api

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func TestWritesBeyondTheBurstAre429PerToken(t *testing.T) {
	t.Parallel()
	// One write a minute after a burst of 5: the sixth write is refused
	// for about a minute, longer than the test.
	h := setup(t, true, map[string]string{"PKGFLEET_HTTP_WRITERATE": "1", "PKGFLEET_HTTP_WRITEBURST": "5"})
	for i := range 5 {
		if code, body := h.req("POST", "/api/v1/sources", `{"name":"s`+strconv.Itoa(i)+`","type":"git"}`, h.tok["write"]); code != 201 {
			t.Fatalf("write %d: %d %s", i, code, body)
		}
	}
	req, _ := http.NewRequest("DELETE", h.url+"/api/v1/sources/s0", nil)
	req.Header.Set("Authorization", "Bearer "+h.tok["write"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if wait, _ := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != http.StatusTooManyRequests || wait < 1 || wait > 60 {
		t.Fatalf("write 6: %d, Retry-After %q; want 429 and 1..60", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code, _ := h.req("GET", "/api/v1/sources/s0", "", h.tok["write"]); code != 200 {
		t.Fatalf("the refused delete deleted the source, or reads are limited too: %d", code)
	}
	// Another token and the same token's reads are not affected.
	if code, body := h.req("POST", "/api/v1/sources", `{"name":"other","type":"git"}`, h.tok["admin"]); code != 201 {
		t.Fatalf("another token's write: %d %s", code, body)
	}
	if code, body := h.req("GET", "/api/v1/sources", "", h.tok["write"]); code != 200 || !strings.Contains(body, "s4") {
		t.Fatalf("the limited token's read: %d %s", code, body)
	}
	// The page's forms share the token's bucket.
	form, _ := http.NewRequest("POST", h.url+"/git-builders/s1/x/run", strings.NewReader("csrf="+csrfFor([]byte(h.tok["write"]))))
	form.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	form.Header.Set("Authorization", "Bearer "+h.tok["write"])
	resp, err = http.DefaultClient.Do(form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the page's run form with the limited token: %d, want 429", resp.StatusCode)
	}
}

func TestWritesWithoutTokensAreLimitedPerAddress(t *testing.T) {
	t.Parallel()
	h := setup(t, false, map[string]string{"PKGFLEET_HTTP_WRITERATE": "1", "PKGFLEET_HTTP_WRITEBURST": "2"})
	for i, want := range []int{201, 201, 429} {
		if code, body := h.req("POST", "/api/v1/sources", `{"name":"s`+strconv.Itoa(i)+`","type":"git"}`, ""); code != want {
			t.Fatalf("write %d: %d %s, want %d", i, code, body, want)
		}
	}
}
