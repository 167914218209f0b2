// Package semaphore limits how many builds of one git-builder run at once
// across the whole fleet (Git.BuildConcurrency), with slots that are
// leases: a holder renews its lease while it builds, so the slot of a
// worker that dies (SIGKILL, OOM, lost host) comes back when the lease
// runs out, not when the task's deadline does (asynq's x/rate leaks it
// until then).
//
// Waiters queue in order (the build id, so older builds go first), and
// only the first free-slots waiters of the queue may take a slot. A waiter
// either parks (TryAcquire: it keeps its place for a while and goes away;
// Next names whom to bring back when a slot frees) or waits in a
// goroutine (Acquire): it does not spin, it sleeps until a release wakes
// it by pub/sub (see internal/notify) or its periodic check comes round.
// Each check renews the waiter's place, so a waiter that died drops out of
// the queue after its place lapses.
//
// Cost of one waiting build, in Redis commands: one EVALSHA per
// CheckEvery (15s by default: 4 a minute), plus one each time a release
// wakes it. TestWaitingBuildCostsFewRedisCommands measures it.
//
// All times are Redis's own clock (TIME), so worker clocks may differ.
// It does not know about builds or asynq: callers pass a key per builder
// and a token per holder.
package semaphore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/notify"
	"github.com/redis/go-redis/v9"
)

// WakeChannel is the pub/sub channel on which a release names the waiters
// (by token) that may now take a slot.
const WakeChannel = "pkgfleet:slots:wake"

// Defaults of the Semaphore's timings.
const (
	DefaultHoldLease  = 60 * time.Second
	DefaultRenewEvery = 15 * time.Second
	DefaultWaitLease  = 60 * time.Second
	DefaultCheckEvery = 15 * time.Second
)

// Semaphore hands out per-key slots. The zero durations take the defaults.
type Semaphore struct {
	rdb redis.UniversalClient
	hub *notify.Hub // nil: periodic checks only

	HoldLease  time.Duration // a slot's lease; a dead holder's slot returns after it
	RenewEvery time.Duration // how often a holder renews (well under HoldLease)
	WaitLease  time.Duration // a waiter's place; a dead waiter leaves the queue after it
	CheckEvery time.Duration // how often a waiter re-checks without a wake-up
}

// New returns a semaphore on rdb. hub, when not nil, must be subscribed to
// WakeChannel.
func New(rdb redis.UniversalClient, hub *notify.Hub) *Semaphore {
	return &Semaphore{rdb: rdb, hub: hub}
}

func (s *Semaphore) holdLease() time.Duration  { return or(s.HoldLease, DefaultHoldLease) }
func (s *Semaphore) renewEvery() time.Duration { return or(s.RenewEvery, DefaultRenewEvery) }
func (s *Semaphore) waitLease() time.Duration  { return or(s.WaitLease, DefaultWaitLease) }
func (s *Semaphore) checkEvery() time.Duration { return or(s.CheckEvery, DefaultCheckEvery) }

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Redis keys of one semaphore key; the {key} hash tag keeps them in one
// Redis Cluster slot, as the scripts need.
func keys(key string) []string {
	base := "pkgfleet:slots:{" + key + "}"
	return []string{
		base + ":held",  // zset token → lease expiry (ms)
		base + ":queue", // zset token → order
		base + ":alive", // zset token → waiter lease expiry (ms)
	}
}

// Shared by the scripts: now in ms from Redis's clock, and the purge of
// expired holders and waiters.
const prelude = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, m in ipairs(dead) do redis.call('ZREM', KEYS[2], m) end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
`

// wake publishes the tokens of the waiters that may now take a slot.
const wake = `
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, free - 1)) do
    redis.call('PUBLISH', '` + WakeChannel + `', m)
  end
end
`

// acquire: ARGV token, limit, order, hold lease ms, wait lease ms.
// Returns {acquired, held, rank}.
var acquireScript = redis.NewScript(prelude + `
local token, limit = ARGV[1], tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], token) then
  -- a redelivery of a build that still holds its slot
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), token)
  redis.call('ZREM', KEYS[2], token)
  redis.call('ZREM', KEYS[3], token)
  return {1, redis.call('ZCARD', KEYS[1]), 0}
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], token)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), token)
local held = redis.call('ZCARD', KEYS[1])
local rank = redis.call('ZRANK', KEYS[2], token)
if rank < limit - held then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), token)
  redis.call('ZREM', KEYS[2], token)
  redis.call('ZREM', KEYS[3], token)
  return {1, held + 1, 0}
end
return {0, held, rank}
`)

// renew: ARGV token, hold lease ms. Returns 1 while the slot is held.
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
`)

// release (and leave the queue): ARGV token, limit. Wakes the waiters
// that may now go.
var releaseScript = redis.NewScript(prelude + `
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
` + wake + `
return 1
`)

// leave: ARGV token, limit. Takes token out of the queue only.
var leaveScript = redis.NewScript(prelude + `
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
` + wake + `
return 1
`)

// Wait describes a waiter's place, for its status.
type Wait struct {
	Position int // 1 = next in line
	InUse    int // slots held
	Limit    int
}

// Acquire takes one of limit slots of key for token, waiting in order
// (lower order first) until one is free or ctx ends. waiting, when not
// nil, is called with the waiter's place whenever it changes; it runs on
// the caller's goroutine. On success the lease is renewed in the
// background until Release.
func (s *Semaphore) Acquire(ctx context.Context, key string, limit int, token string, order int64, waiting func(Wait)) (*Lease, error) {
	if limit < 1 {
		limit = 1
	}
	ks := keys(key)
	woken, stop := s.hub.Listen(WakeChannel, token)
	defer stop()
	var last Wait
	for {
		res, err := acquireScript.Run(ctx, s.rdb, ks, token, limit, order,
			s.holdLease().Milliseconds(), s.waitLease().Milliseconds()).Int64Slice()
		switch {
		case err != nil && ctx.Err() != nil:
			s.leave(ctx, key, limit, token)
			return nil, ctx.Err()
		case err != nil:
			// Redis unreachable: try again at the next check; the place
			// in line outlives a few missed checks (WaitLease).
		case res[0] == 1:
			return s.hold(key, limit, token), nil
		default:
			if w := (Wait{Position: int(res[2]) + 1, InUse: int(res[1]), Limit: limit}); w != last && waiting != nil {
				waiting(w)
				last = w
			}
		}
		// Jitter spreads the checks of waiters that started together.
		check := s.checkEvery()
		timer := time.NewTimer(check - check/10 + rand.N(check/5+1))
		select {
		case <-ctx.Done():
			timer.Stop()
			s.leave(ctx, key, limit, token)
			return nil, ctx.Err()
		case <-woken:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// leave takes token out of the queue, even when ctx has ended.
func (s *Semaphore) leave(ctx context.Context, key string, limit int, token string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = leaveScript.Run(ctx, s.rdb, keys(key), token, limit).Err()
}

// Leave takes token out of key's queue of waiters (for a build canceled
// while it waits on some worker) and wakes whoever may go instead. A slot
// token holds stays held until its holder releases it, so a canceled
// build's processes are gone before another build gets its slot.
func (s *Semaphore) Leave(ctx context.Context, key string, limit int, token string) error {
	return leaveScript.Run(ctx, s.rdb, keys(key), token, limit).Err()
}

// ErrLost means a lease ran out before it was renewed (Redis was
// unreachable for longer than HoldLease): another build may have the slot.
var ErrLost = errors.New("build slot lease lost")

// Lease is a held slot.
type Lease struct {
	s     *Semaphore
	key   string
	limit int
	token string
	stop  chan struct{}
	done  chan struct{}
	lost  chan struct{}
}

func (s *Semaphore) hold(key string, limit int, token string) *Lease {
	l := &Lease{s: s, key: key, limit: limit, token: token,
		stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
	go l.renew()
	return l
}

func (l *Lease) renew() {
	defer close(l.done)
	t := time.NewTicker(l.s.renewEvery())
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.s.renewEvery())
		ok, err := renewScript.Run(ctx, l.s.rdb, keys(l.key)[:1], l.token, l.s.holdLease().Milliseconds()).Int()
		cancel()
		if err == nil && ok == 0 {
			close(l.lost)
			return
		}
		// An error is retried at the next tick; the lease outlives
		// several of them.
	}
}

// Lost is closed when the lease ran out before it could be renewed.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Release gives the slot back and wakes the next waiters. It works with a
// canceled ctx (it only keeps ctx's values) and is safe to call twice.
func (l *Lease) Release(ctx context.Context) error {
	select {
	case <-l.stop:
		return nil
	default:
		close(l.stop)
	}
	<-l.done
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := releaseScript.Run(ctx, l.s.rdb, keys(l.key), l.token, l.limit).Err(); err != nil {
		return fmt.Errorf("release build slot of %s: %w (it returns when its lease ends)", l.key, err)
	}
	return nil
}

// Holders lists the tokens holding key's slots (for status and tests).
func (s *Semaphore) Holders(ctx context.Context, key string) ([]string, error) {
	now, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return nil, err
	}
	return s.rdb.ZRangeByScore(ctx, keys(key)[0], &redis.ZRangeBy{
		Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}).Result()
}
