package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

const hookSecret = "webhook-secret-0123456789"

// hooked makes source src with builder b that has a webhook secret.
func (h *harness) hooked() {
	h.t.Helper()
	if code, body := h.req("POST", "/api/v1/sources", `{"name":"src","type":"git"}`, ""); code != 201 {
		h.t.Fatalf("create source: %d %s", code, body)
	}
	if code, body := h.req("POST", "/api/v1/sources/src/git-builders", `{"name":"b","url":"https://example.invalid/r","webhook_secret":"`+hookSecret+`"}`, ""); code != 201 {
		h.t.Fatalf("create builder: %d %s", code, body)
	}
}

// post sends a webhook with body and headers; "SIGN" as a header value
// is replaced by the body's GitHub signature. It returns the status, or 0
// when the server closed the connection before the client finished
// sending (an oversized body).
func (h *harness) post(path string, body io.Reader, size int64, header map[string]string) int {
	h.t.Helper()
	req, _ := http.NewRequest("POST", h.url+path, body)
	req.ContentLength = size
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func sign(body string) string {
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// filler is an endless body that costs the sender no memory.
type filler struct{}

func (filler) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// Not parallel: it measures the process's allocations.
func TestOversizedWebhooksAllocateUnder64MiB(t *testing.T) {
	h := setup(t, false)
	h.hooked()
	const posts, size = 10, 30 << 20 // 300 MiB sent in all
	var mu sync.Mutex
	statuses := map[int]int{}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for i := range posts {
		// Half say their size (refused before a byte is read), half are
		// chunked (read up to the cap); to the named builder and to the
		// old route that named none.
		path := "/api/v1/hooks/github/src/b"
		if i%4 >= 2 {
			path = "/api/v1/hooks/github"
		}
		var n int64 = -1
		if i%2 == 0 {
			n = size
		}
		wg.Go(func() {
			got := h.post(path, io.LimitReader(filler{}, size), n, map[string]string{
				"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + strings.Repeat("ab", 32)})
			mu.Lock()
			statuses[got]++
			mu.Unlock()
		})
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	const bound = 64 << 20
	grown := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d parallel %d MiB webhooks: %.1f MiB allocated, answers %v", posts, size>>20, float64(grown)/(1<<20), statuses)
	if grown > bound {
		t.Errorf("%d parallel %d MiB webhooks allocated %d MiB, want < %d MiB", posts, size>>20, grown>>20, bound>>20)
	}
	for status, n := range statuses {
		if status != 0 && status != http.StatusRequestEntityTooLarge && status != http.StatusGone {
			t.Errorf("%d oversized webhooks answered %d, want 413 (or 410 on the old route)", n, status)
		}
	}
	if statuses[http.StatusRequestEntityTooLarge] == 0 {
		t.Errorf("no oversized webhook was answered 413: %v", statuses)
	}
}

func TestRejectedWebhooksAreNotLoggedAsWarnings(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	log, captured := testenv.CapturingLogger(t)
	h.srv.Log = log
	h.hooked()
	counter := &testenv.CommandCounter{}
	h.rdb.AddHook(counter)
	const tries = 20
	for i := range tries {
		body := `{"i":` + strings.Repeat("1", i+1) + `}`
		for _, c := range []struct {
			path   string
			header map[string]string
			want   int
		}{
			{"/api/v1/hooks/github/src/b", map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("ab", 32)}, 401},
			{"/api/v1/hooks/gitlab/src/b", map[string]string{"X-Gitlab-Token": "wrong-token-0123456789"}, 401},
			{"/api/v1/hooks/generic/src/nope", map[string]string{"Authorization": "Bearer " + hookSecret}, 401},
			{"/api/v1/hooks/github", map[string]string{"X-Hub-Signature-256": sign(body)}, 410},
		} {
			if got := h.post(c.path, strings.NewReader(body), int64(len(body)), c.header); got != c.want {
				t.Fatalf("POST %s: %d, want %d", c.path, got, c.want)
			}
		}
	}
	if strings.Contains(captured.String(), "level=WARN") || strings.Contains(captured.String(), "level=ERROR") {
		t.Errorf("rejected webhooks logged warnings:\n%s", captured.String())
	}
	// Each rejection reads at most the named builder's secret.
	if n, by := counter.Total(); n > 3*tries {
		t.Errorf("%d rejected webhooks sent %d Redis commands (%v), want at most one each", 3*tries, n, by)
	}
}

func TestWebhookDeliveryReplayIsRefused(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	h.hooked()
	body := `{"ref":"refs/heads/main"}`
	github := func(delivery, sig string) int {
		hdr := map[string]string{"X-Hub-Signature-256": sig}
		if delivery != "" {
			hdr["X-GitHub-Delivery"] = delivery
		}
		return h.post("/api/v1/hooks/github/src/b", strings.NewReader(body), int64(len(body)), hdr)
	}
	bad := "sha256=" + strings.Repeat("ab", 32)
	for i, c := range []struct {
		what, delivery, sig string
		want                int
	}{
		// A stranger's request with an id does not use the id up.
		{"unsigned, id 2", "2", bad, 401},
		{"first delivery", "1", sign(body), 202},
		{"its replay", "1", sign(body), 409},
		{"another delivery", "2", sign(body), 202},
		{"no delivery id: accepted", "", sign(body), 202},
		{"no delivery id again: accepted", "", sign(body), 202},
	} {
		if got := github(c.delivery, c.sig); got != c.want {
			t.Fatalf("step %d (%s): %d, want %d", i, c.what, got, c.want)
		}
	}
	gitlab := map[string]string{"X-Gitlab-Token": hookSecret, "Idempotency-Key": "k1"}
	for i, want := range []int{202, 409} {
		if got := h.post("/api/v1/hooks/gitlab/src/b", strings.NewReader(body), int64(len(body)), gitlab); got != want {
			t.Fatalf("gitlab delivery %d: %d, want %d", i, got, want)
		}
	}
	long := map[string]string{"X-Gitlab-Token": hookSecret, "Idempotency-Key": strings.Repeat("k", 201)}
	if got := h.post("/api/v1/hooks/gitlab/src/b", strings.NewReader(body), int64(len(body)), long); got != 400 {
		t.Fatalf("a 201-byte delivery id: %d, want 400", got)
	}
}
