package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
)

// client talks to the pkgfleet API.
type client struct {
	base  string
	token string
	http  *http.Client
}

// apiError is an error answer of the API; its message is the API's.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return e.Msg }

// A write over the API's rate limit (HTTP.WriteRate) is answered 429 before
// it does anything, with the seconds to wait in Retry-After: do waits that
// long and asks again, up to rateLimitTries times, when the wait is at most
// maxRetryAfter (a longer one is the API telling a script to stop).
//
// A 503 with Retry-After (Redis failing over or out of reach: the API
// did nothing it acknowledged) is asked again the same way, up to
// unavailableTries times, which outlasts a Sentinel failover.
const (
	rateLimitTries   = 3
	unavailableTries = 60
	maxRetryAfter    = 60 * time.Second
)

func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		payload = b
	}
	for try := 1; ; try++ {
		wait, err := c.once(ctx, method, path, payload, body != nil, out)
		tries := rateLimitTries
		if ae := (*apiError)(nil); errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable {
			tries = unavailableTries
		}
		if wait <= 0 || try >= tries {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// once sends one request. A 429 whose Retry-After do may wait for returns
// that wait beside its error.
func (c *client) once(ctx context.Context, method, path string, payload []byte, hasBody bool, out any) (time.Duration, error) {
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, fmt.Errorf("bad address %q: %v", c.base, err)
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("cannot reach pkgfleet at %s: %v", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode >= 400 {
		var e apiv1.Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
			if e.Error == "" {
				e.Error = resp.Status
			}
		}
		var wait time.Duration
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n >= 0 {
				if wait = time.Duration(n) * time.Second; wait > maxRetryAfter {
					wait = 0
				} else if wait == 0 {
					wait = time.Millisecond // "now": still a wait, so do asks again
				}
			}
		}
		return wait, &apiError{Status: resp.StatusCode, Msg: e.Error}
	}
	switch out := out.(type) {
	case nil:
		return 0, nil
	case *[]byte:
		*out = data
		return 0, nil
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return 0, fmt.Errorf("unexpected answer from %s: %v", path, err)
		}
		return 0, nil
	}
}

// logChunk reads the build log from offset.
func (c *client) logChunk(ctx context.Context, id int64, offset int64) (data []byte, next int64, status string, err error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/api/v1/builds/%d/log?offset=%d", c.base, id, offset), nil)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, offset, "", fmt.Errorf("cannot reach pkgfleet at %s: %v", c.base, err)
	}
	defer resp.Body.Close()
	data, _ = io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		var e apiv1.Error
		_ = json.Unmarshal(data, &e)
		return nil, offset, "", &apiError{Status: resp.StatusCode, Msg: e.Error}
	}
	var n int64
	fmt.Sscan(resp.Header.Get("X-Log-Offset"), &n)
	return data, n, resp.Header.Get("X-Build-Status"), nil
}
