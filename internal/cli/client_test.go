package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// A write refused by the API's rate limit (429 with Retry-After), or while
// Redis fails over (503 with Retry-After), is asked again after the wait,
// with the same body; a wait longer than maxRetryAfter, or the last
// refusal, is the API's error as it said it.
func TestAWriteOverTheRateLimitIsAskedAgainAfterRetryAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		refusals   int
		wantTries  int
		wantErr    bool
	}{
		{"waits and succeeds", http.StatusTooManyRequests, "0", 1, 2, false},
		{"gives up after the last try", http.StatusTooManyRequests, "0", 10, rateLimitTries, true},
		{"does not wait an hour", http.StatusTooManyRequests, "3600", 1, 1, true},
		{"no Retry-After", http.StatusTooManyRequests, "", 1, 1, true},
		{"outlasts a failover", http.StatusServiceUnavailable, "0", 20, 21, false},
		{"gives up after a failover's tries", http.StatusServiceUnavailable, "0", 100, unavailableTries, true},
		{"a 503 without Retry-After is not asked again", http.StatusServiceUnavailable, "", 1, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var bodies []string
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				bodies = append(bodies, string(b))
				n := len(bodies)
				mu.Unlock()
				if n <= tc.refusals {
					if tc.retryAfter != "" {
						w.Header().Set("Retry-After", tc.retryAfter)
					}
					w.WriteHeader(tc.status)
					_ = json.NewEncoder(w).Encode(map[string]string{"error": "too many writes"})
					return
				}
				_ = json.NewEncoder(w).Encode(map[string]string{"name": "apps"})
			}))
			t.Cleanup(api.Close)
			c := &client{base: api.URL, http: api.Client()}
			var out map[string]string
			err := c.do(context.Background(), "POST", "/api/v1/sources", map[string]string{"name": "apps"}, &out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want an error: %v", err, tc.wantErr)
			}
			if err != nil && err.Error() != "too many writes" {
				t.Errorf("err = %q, want the API's own message", err)
			}
			if !tc.wantErr && out["name"] != "apps" {
				t.Errorf("answer = %v", out)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(bodies) != tc.wantTries {
				t.Fatalf("%d requests, want %d", len(bodies), tc.wantTries)
			}
			for i, b := range bodies {
				if b != `{"name":"apps"}` {
					t.Errorf("request %d carried %q, want the same body each time", i+1, b)
				}
			}
		})
	}
}
