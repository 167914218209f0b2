// Package ratelimit keeps token buckets in Redis, so that a limit holds
// across every API replica: each key (an API token's name, a client
// address) has a bucket of Burst requests that refills at PerMinute; a
// request takes one or is told how long to wait.
//
// It does not decide what is limited or by which key: the API does.
package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limiter is a token bucket per key. The zero PerMinute means no limit.
type Limiter struct {
	Redis     redis.UniversalClient
	PerMinute int // refill rate
	Burst     int // bucket size (at least 1)
}

// takeScript refills the bucket for the time since it was last touched
// (by Redis's clock, one for every replica), takes one request if it can,
// and answers {1, 0} or {0, milliseconds until one is free}. An idle
// bucket expires once it would be full again, so keys do not pile up.
var takeScript = redis.NewScript(`
local burst = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2]) / 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * per_ms)
local ok, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  ok = 1
else
  wait = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / per_ms) + 1000)
return {ok, wait}
`)

// Allow takes one request from key's bucket. When it is empty, ok is
// false and wait says when the next request will be allowed.
func (l *Limiter) Allow(ctx context.Context, key string) (ok bool, wait time.Duration, err error) {
	if l == nil || l.PerMinute <= 0 {
		return true, 0, nil
	}
	res, err := takeScript.Run(ctx, l.Redis, []string{"pkgfleet:ratelimit:" + key}, max(l.Burst, 1), l.PerMinute).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("rate limit of %s: %w", key, err)
	}
	return res[0] == 1, time.Duration(res[1]) * time.Millisecond, nil
}
