package semaphore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Parking: a caller that finds no free slot does not wait in a goroutine.
// TryAcquire keeps its place in line (for Ask.PlaceFor) and notes how to
// wake it; the caller gives its worker back and is brought back when a
// slot frees: whoever releases a slot gets the parked waiters that may go
// now from Release (or Leave), and a periodic sweep asks Next. The line's
// member (the waiter) names the build, so its place survives its
// attempts; the slot is held by the holder, which names one attempt, so a
// later attempt never adopts an earlier attempt's slot.

// waitingKeys is a set of the keys whose lines may have waiters, for the
// sweep.
const waitingKeys = "pkgfleet:slots:waiting-keys"

// Ask is one request for a slot.
type Ask struct {
	Waiter   string        // the place in line, kept across asks
	Holder   string        // who holds the slot if it is granted
	Order    int64         // the place's rank: lower goes first
	PlaceFor time.Duration // how long the place outlives this ask
	// WakeBy is how the waiter is woken if it is refused: "" to listen on
	// WakeChannel in this process; anything else is handed back by
	// Release, Leave and Next for the caller to act on (a parked build's
	// task, for instance).
	WakeBy string
}

// tryAcquire: ARGV waiter, limit, order, hold lease ms, place lease ms,
// holder, wake by. Returns {acquired, held, rank}.
var tryAcquireScript = redis.NewScript(prelude + `
local waiter, limit, holder = ARGV[1], tonumber(ARGV[2]), ARGV[6]
if redis.call('ZSCORE', KEYS[1], holder) then
  redis.call('HDEL', KEYS[4], waiter)
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
  redis.call('HDEL', KEYS[4], waiter)
  return {1, held + 1, 0}
end
redis.call('HSET', KEYS[4], waiter, ARGV[7])
return {0, held, rank}
`)

// TryAcquire takes one of limit slots of key for a.Holder when a.Waiter's
// place in line allows it. Otherwise the waiter keeps (or takes) its
// place for a.PlaceFor and the returned Wait says where it stands; it is
// woken as a.WakeBy says, and must ask again then, or before its place
// lapses. The lease is not renewed in the background: call Lease.Renew
// well within HoldLease.
func (s *Semaphore) TryAcquire(ctx context.Context, key string, limit int, a Ask) (*Lease, Wait, error) {
	limit = max(limit, 1)
	res, err := tryAcquireScript.Run(ctx, s.rdb, keys(key), a.Waiter, limit, a.Order,
		s.holdLease().Milliseconds(), a.PlaceFor.Milliseconds(), a.Holder, a.WakeBy).Int64Slice()
	if err != nil {
		return nil, Wait{}, fmt.Errorf("build slot of %s: %w", key, err)
	}
	if res[0] == 1 {
		return s.lease(key, limit, a.Holder), Wait{}, nil
	}
	// A parked waiter relies on the sweep should its wake-up be lost; a
	// listening one checks again by itself.
	if a.WakeBy != "" {
		if err := s.rdb.SAdd(ctx, waitingKeys, key).Err(); err != nil {
			return nil, Wait{}, fmt.Errorf("build slot of %s: %w", key, err)
		}
	}
	return nil, Wait{Position: int(res[2]) + 1, InUse: int(res[1]), Limit: limit}, nil
}

// next: ARGV (unused), limit.
var nextScript = redis.NewScript(prelude + wake)

// Next returns the parked waiters of key that may take a slot now, for a
// sweep to wake (their releaser may have died before it woke them, or a
// holder's lease ran out). A key with nobody in line leaves the sweep's
// set.
func (s *Semaphore) Next(ctx context.Context, key string, limit int) ([]Woken, error) {
	res, err := nextScript.Run(ctx, s.rdb, keys(key), "", max(limit, 1)).Slice()
	if err != nil {
		return nil, fmt.Errorf("waiters of %s: %w", key, err)
	}
	n, out := woken(res)
	if n == 0 {
		// A waiter that joins between the script and SREM is missed by
		// sweeps until it asks again by itself (within its place) and
		// adds the key again; releases of this key still wake it.
		if err := s.rdb.SRem(ctx, waitingKeys, key).Err(); err != nil {
			return nil, err
		}
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
// place lasts at least placeFor. A waiter that has joined but not asked
// needs no waking: Release, Leave and Next pass over it.
func (s *Semaphore) Join(ctx context.Context, key, waiter string, order int64, placeFor time.Duration) error {
	if err := joinScript.Run(ctx, s.rdb, keys(key), waiter, order, placeFor.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("join the line of %s: %w", key, err)
	}
	return s.rdb.SAdd(ctx, waitingKeys, key).Err()
}
