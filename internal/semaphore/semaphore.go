// Package semaphore limits how many builds of one git-builder run at once
// across the whole fleet (Git.BuildConcurrency), with slots that are
// leases: a holder renews its lease while it builds, so the slot of a
// worker that dies (SIGKILL, OOM, lost host) comes back when the lease
// runs out, not when the task's deadline does (asynq's x/rate leaks it
// until then).
//
// Waiters stand in one line per key, in order (the build id, so older
// builds go first), and only the first free-slots waiters of the line may
// take a slot. A build joins the line when it is queued (Join) and asks
// for a slot when a worker takes it (TryAcquire). A waiter that is
// refused says how it wants to be woken (Ask.WakeBy): it parks (gives its
// worker back; Release, Leave and Next name it to the caller, who brings
// it back) or it listens in its process (a release publishes its name on
// WakeChannel, see internal/notify). A waiter that has not asked yet needs
// no waking: its task is still on its way to a worker. So a release costs
// one script however long the line, and wakes only whom it must.
//
// All times are Redis's own clock (TIME), so worker clocks may differ.
// It does not know about builds or asynq: callers pass a key per builder,
// a waiter per build, a holder per attempt and an opaque wake address.
package semaphore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/lease"
	"github.com/redis/go-redis/v9"
)

// WakeChannel is the pub/sub channel on which a release names the
// listening waiters that may now take a slot.
const WakeChannel = "pkgfleet:slots:wake"

// Defaults of the Semaphore's timings.
const (
	// DefaultHoldLease is the build slot's lease (lease.Slot).
	DefaultHoldLease  = lease.Slot
	DefaultCheckEvery = 15 * time.Second
)

// Semaphore hands out per-key slots. The zero durations take the defaults.
type Semaphore struct {
	rdb redis.UniversalClient

	HoldLease  time.Duration // a slot's lease; a dead holder's slot returns after it
	CheckEvery time.Duration // how often a listening waiter re-checks without a wake-up
}

// New returns a semaphore on rdb.
func New(rdb redis.UniversalClient) *Semaphore {
	return &Semaphore{rdb: rdb}
}

func (s *Semaphore) holdLease() time.Duration { return or(s.HoldLease, DefaultHoldLease) }

// CheckInterval is how long a listening waiter sleeps between checks when
// no release wakes it, with jitter, so that waiters that started together
// spread out.
func (s *Semaphore) CheckInterval() time.Duration {
	check := or(s.CheckEvery, DefaultCheckEvery)
	return check - check/10 + rand.N(check/5+1)
}

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
		base + ":held",  // zset holder → lease expiry (ms)
		base + ":queue", // zset waiter → order
		base + ":alive", // zset waiter → place expiry (ms)
		base + ":wake",  // hash waiter → Ask.WakeBy, for waiters that asked and were refused
	}
}

// Shared by the scripts: now in ms from Redis's clock, and the purge of
// expired holders and waiters.
const prelude = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, m in ipairs(dead) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[4], m)
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
`

// wake (ARGV[2] = limit) ends a script: it returns {waiters in line,
// then waiter, WakeBy pairs} for the first free-slots waiters in line
// that parked, and publishes those that listen. Waiters that have not
// asked are left alone.
const wake = `
local out = {redis.call('ZCARD', KEYS[2])}
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, free - 1)) do
    local by = redis.call('HGET', KEYS[4], m)
    if by == '' then
      redis.call('PUBLISH', '` + WakeChannel + `', m)
    elseif by then
      table.insert(out, m)
      table.insert(out, by)
    end
  end
end
return out
`

// Woken is a parked waiter that may take a slot now; its caller wakes it
// the way it asked (Ask.WakeBy).
type Woken struct {
	Waiter, WakeBy string
}

// woken reads wake's result: how many stand in line, and whom to wake.
func woken(res []any) (int64, []Woken) {
	n, _ := res[0].(int64)
	var out []Woken
	for i := 1; i+1 < len(res); i += 2 {
		out = append(out, Woken{Waiter: fmt.Sprint(res[i]), WakeBy: fmt.Sprint(res[i+1])})
	}
	return n, out
}

// renew: ARGV holder, hold lease ms. Returns 1 while the slot is held.
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
`)

// release: ARGV holder, limit. Gives the slot back.
var releaseScript = redis.NewScript(prelude + `
redis.call('ZREM', KEYS[1], ARGV[1])
` + wake)

// leave: ARGV waiter, limit. Takes waiter out of the line.
var leaveScript = redis.NewScript(prelude + `
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
` + wake)

// Wait describes a waiter's place, for its status.
type Wait struct {
	Position int // 1 = next in line
	InUse    int // slots held
	Limit    int
}

// Leave takes waiter out of key's line (for a build canceled while it
// waits) and returns the parked waiters that may go instead. A slot the
// build holds stays held until its holder releases it, so a canceled
// build's processes are gone before another build gets its slot.
func (s *Semaphore) Leave(ctx context.Context, key string, limit int, waiter string) ([]Woken, error) {
	res, err := leaveScript.Run(ctx, s.rdb, keys(key), waiter, max(limit, 1)).Slice()
	if err != nil {
		return nil, fmt.Errorf("leave the line of %s: %w", key, err)
	}
	_, out := woken(res)
	return out, nil
}

// ErrLost means a lease ran out before it was renewed (Redis was
// unreachable for longer than HoldLease): another build may have the slot.
var ErrLost = errors.New("build slot lease lost")

// Lease is a held slot, renewed by its holder (Renew) well within
// HoldLease.
type Lease struct {
	s     *Semaphore
	key   string
	limit int
	token string
	once  sync.Once
}

func (s *Semaphore) lease(key string, limit int, holder string) *Lease {
	return &Lease{s: s, key: key, limit: limit, token: holder}
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

// Release gives the slot back and returns the parked waiters that may go
// now (listening ones are woken by pub/sub). It works with a canceled ctx
// (it only keeps ctx's values) and is safe to call twice.
func (l *Lease) Release(ctx context.Context) ([]Woken, error) {
	first := false
	l.once.Do(func() { first = true })
	if !first {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	res, err := releaseScript.Run(ctx, l.s.rdb, keys(l.key), l.token, l.limit).Slice()
	if err != nil {
		return nil, fmt.Errorf("release build slot of %s: %w (it returns when its lease ends)", l.key, err)
	}
	_, out := woken(res)
	return out, nil
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
