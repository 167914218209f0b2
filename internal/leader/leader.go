// Package leader elects one process among many (the API replicas) to do a
// job that must run once, such as polling remotes. The leader holds a
// Redis lease (SET NX PX) that it renews; a replica that dies stops
// renewing, and another takes over when the lease runs out.
//
// Every term has a fencing token, a number that only grows: the lease's
// value is "token:owner", and Fence lets a leader make a write conditional
// on still holding its term, so a paused ex-leader cannot overwrite the
// work of its successor.
package leader

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Elector campaigns for one lease.
type Elector struct {
	rdb   redis.UniversalClient
	key   string
	owner string
	log   *slog.Logger

	TTL        time.Duration // lease duration (default 30s): the takeover time after a crash
	RenewEvery time.Duration // default TTL/3
	RetryEvery time.Duration // how often a follower tries (default TTL/6)
}

// New returns an elector for the lease key; owner names this process in
// logs and in the lease value.
func New(rdb redis.UniversalClient, key, owner string, log *slog.Logger) *Elector {
	return &Elector{rdb: rdb, key: key, owner: owner, log: log}
}

func (e *Elector) ttl() time.Duration {
	if e.TTL > 0 {
		return e.TTL
	}
	return 30 * time.Second
}

func (e *Elector) renewEvery() time.Duration {
	if e.RenewEvery > 0 {
		return e.RenewEvery
	}
	return e.ttl() / 3
}

func (e *Elector) retryEvery() time.Duration {
	if e.RetryEvery > 0 {
		return e.RetryEvery
	}
	return e.ttl() / 6
}

// acquire takes the lease when it is free (or already ours) and returns
// the lease value, or "" when another process holds it.
var acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  if string.sub(cur, string.find(cur, ':') + 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return cur
  end
  return ''
end
local tok = redis.call('INCR', KEYS[2])
local v = tok .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return v
`)

// renew extends the lease only while it still holds this term's value.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Term is one leadership term.
type Term struct {
	Token int64  // the fencing token: larger than any earlier term's
	value string // the lease value, "token:owner"
	key   string
}

// Fence returns KEYS and ARGV prefixes for a script that must only write
// while this term holds the lease: the script checks
// redis.call('GET', KEYS[1]) == ARGV[1] before it writes.
func (t *Term) Fence() (key, value string) { return t.key, t.value }

// Run campaigns until ctx ends; each time this process wins the lease it
// calls lead with a context that ends when the term does (lease lost or
// ctx done). On return it gives the lease up, so another replica takes
// over at once after a clean shutdown.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context, term *Term)) error {
	for {
		term, err := e.tryAcquire(ctx)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("leader election: redis error", "lease", e.key, "error", err)
		}
		if term != nil {
			e.serve(ctx, term, lead)
		}
		wait := e.retryEvery()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait - wait/5 + rand.N(wait/5+1)):
		}
	}
}

func (e *Elector) tryAcquire(ctx context.Context) (*Term, error) {
	v, err := acquireScript.Run(ctx, e.rdb, []string{e.key, e.key + ":fence"}, e.owner, e.ttl().Milliseconds()).Text()
	if err != nil || v == "" {
		return nil, err
	}
	tokStr, _, _ := strings.Cut(v, ":")
	tok, err := strconv.ParseInt(tokStr, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("lease %s holds %q", e.key, v)
	}
	return &Term{Token: tok, value: v, key: e.key}, nil
}

// serve runs one term: lead runs while a renewer keeps the lease. The term
// ends when a renewal finds the lease gone, when renewals have failed for
// a whole TTL (Redis unreachable: someone else may lead by now), or when
// ctx ends.
func (e *Elector) serve(ctx context.Context, term *Term, lead func(context.Context, *Term)) {
	e.log.Info("this process is now the leader", "lease", e.key, "token", term.Token, "owner", e.owner)
	termCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(termCtx, term)
	}()
	lastRenew := time.Now()
	t := time.NewTicker(e.renewEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			cancel()
			<-done
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = releaseScript.Run(rctx, e.rdb, []string{e.key}, term.value).Err()
			rcancel()
			e.log.Info("leadership given up on shutdown", "lease", e.key, "token", term.Token)
			return
		case <-done:
			cancel()
			return
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, e.renewEvery())
		ok, err := renewScript.Run(rctx, e.rdb, []string{e.key}, term.value, e.ttl().Milliseconds()).Int()
		rcancel()
		switch {
		case err == nil && ok == 1:
			lastRenew = time.Now()
			continue
		case err == nil:
			e.log.Warn("leadership lost: the lease was taken over", "lease", e.key, "token", term.Token)
		case time.Since(lastRenew) >= e.ttl():
			e.log.Warn("leadership lost: the lease could not be renewed", "lease", e.key, "token", term.Token, "error", err)
		default:
			continue
		}
		cancel()
		<-done
		return
	}
}
