package semaphore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Parking: a caller that finds no free slot does not wait in a goroutine.
// TryAcquire puts it in line (its place outlives it for parkFor) and
// returns; the caller gives its worker back and is brought back when a
// slot frees: whoever releases a slot, and a periodic sweep, ask Next
// which waiters may go now and wake them. The queue member (the waiter)
// names the build, so its place survives its attempts; the slot is held
// by the holder token, which names one attempt, so a later attempt never
// adopts an earlier attempt's slot.

// waitingKeys is a set of the keys whose queues may have waiters, for
// the sweep.
const waitingKeys = "pkgfleet:slots:waiting-keys"

// tryAcquire: ARGV waiter, limit, order, hold lease ms, place lease ms,
// holder. Returns {acquired, held, rank}.
var tryAcquireScript = redis.NewScript(prelude + `
local waiter, limit, holder = ARGV[1], tonumber(ARGV[2]), ARGV[6]
if redis.call('ZSCORE', KEYS[1], holder) then
  return {1, redis.call('ZCARD', KEYS[1]), 0}
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], waiter)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), waiter)
local held = redis.call('ZCARD', KEYS[1])
local rank = redis.call('ZRANK', KEYS[2], waiter)
if rank < limit - held then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), holder)
  redis.call('ZREM', KEYS[2], waiter)
  redis.call('ZREM', KEYS[3], waiter)
  return {1, held + 1, 0}
end
return {0, held, rank}
`)

// TryAcquire takes one of limit slots of key for holder when waiter's
// place in line (by order, lower first) allows it. Otherwise waiter keeps
// (or takes) its place for parkFor and the returned Wait says where it
// stands; call TryAcquire again when Next names it, or before parkFor
// ends. The lease is not renewed in the background: call Lease.Renew
// well within HoldLease.
func (s *Semaphore) TryAcquire(ctx context.Context, key string, limit int, waiter, holder string, order int64, parkFor time.Duration) (*Lease, Wait, error) {
	limit = max(limit, 1)
	res, err := tryAcquireScript.Run(ctx, s.rdb, keys(key), waiter, limit, order,
		s.holdLease().Milliseconds(), parkFor.Milliseconds(), holder).Int64Slice()
	if err != nil {
		return nil, Wait{}, fmt.Errorf("build slot of %s: %w", key, err)
	}
	if res[0] == 1 {
		return s.held(key, limit, holder), Wait{}, nil
	}
	if err := s.rdb.SAdd(ctx, waitingKeys, key).Err(); err != nil {
		return nil, Wait{}, fmt.Errorf("build slot of %s: %w", key, err)
	}
	return nil, Wait{Position: int(res[2]) + 1, InUse: int(res[1]), Limit: limit}, nil
}

// held is a lease its holder renews itself (see Renew).
func (s *Semaphore) held(key string, limit int, token string) *Lease {
	l := &Lease{s: s, key: key, limit: limit, token: token,
		stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
	close(l.done)
	return l
}

// Renew extends the lease by HoldLease; ErrLost means it had already run
// out (another holder may have the slot now).
func (l *Lease) Renew(ctx context.Context) error {
	ok, err := renewScript.Run(ctx, l.s.rdb, keys(l.key)[:1], l.token, l.s.holdLease().Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("renew build slot of %s: %w", l.key, err)
	}
	if ok == 0 {
		return ErrLost
	}
	return nil
}

// next: ARGV limit. Returns {waiters left, the first free ones…}.
var nextScript = redis.NewScript(prelude + `
local out = {redis.call('ZCARD', KEYS[2])}
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
if free > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, free - 1)) do table.insert(out, m) end
end
return out
`)

// Next returns the waiters of key that may take a slot now (the first
// free-slots ones in line), to wake after a release or in a sweep. A key
// with nobody in line leaves the sweep's set.
func (s *Semaphore) Next(ctx context.Context, key string, limit int) ([]string, error) {
	res, err := nextScript.Run(ctx, s.rdb, keys(key), max(limit, 1)).Slice()
	if err != nil {
		return nil, fmt.Errorf("waiters of %s: %w", key, err)
	}
	if n, _ := res[0].(int64); n == 0 {
		// A waiter that joins between the script and SREM is missed by
		// sweeps until it re-checks by itself (within its parkFor) and
		// adds the key again; releases of this key still wake it.
		if err := s.rdb.SRem(ctx, waitingKeys, key).Err(); err != nil {
			return nil, err
		}
	}
	var out []string
	for _, m := range res[1:] {
		out = append(out, fmt.Sprint(m))
	}
	return out, nil
}

// WaitingKeys lists the keys that may have waiters, for a sweep.
func (s *Semaphore) WaitingKeys(ctx context.Context) ([]string, error) {
	return s.rdb.SMembers(ctx, waitingKeys).Result()
}

// join: ARGV waiter, order, place lease ms.
var joinScript = redis.NewScript(prelude + `
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
if (tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]) or 0)) < now + tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
end
return 1
`)

// Join puts waiter in key's line (by order) before it asks for a slot, so
// that a newer waiter that asks first cannot take a slot ahead of it. Its
// place lasts at least placeFor.
func (s *Semaphore) Join(ctx context.Context, key, waiter string, order int64, placeFor time.Duration) error {
	if err := joinScript.Run(ctx, s.rdb, keys(key), waiter, order, placeFor.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("join the line of %s: %w", key, err)
	}
	return s.rdb.SAdd(ctx, waitingKeys, key).Err()
}
