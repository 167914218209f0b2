package redisconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/redis/go-redis/v9"
)

// The durability contract (docs/fleet.md, "Redis failover"): with
// Sentinel, the writes that must survive a failover count only once
// Redis.WaitReplicas replicas hold them, within Redis.WaitTimeout. They
// are: the build a 202 acknowledges (record, queued task, place in line:
// queue.Enqueuer), an attempt's begin with its build slot, each fence
// confirmation, and a succeeded record (internal/pipeline). Every one of
// them goes through Durability.Wait; nothing else WAITs.

// ErrNotDurable matches the error of a write that too few replicas
// confirmed in time: it may or may not survive a failover, so it must not
// be acknowledged. It is transient: asking again is safe.
var ErrNotDurable = errors.New("write not confirmed by enough Redis replicas")

// keyDurable is the marker each Wait writes: WAIT counts the replicas
// that acknowledged the connection's last write, and the pool may hand
// Wait another connection than the one that wrote, so Wait writes (and
// waits) on one connection. Replication is one ordered stream, so a
// replica that holds the marker holds every write answered before it.
const keyDurable = "pkgfleet:durable"

// Durability is the step that makes a write survive a failover. The zero
// value (no Sentinel: no replicas to wait for) does nothing.
type Durability struct {
	Replicas int
	Timeout  time.Duration
}

// DurabilityOf is the step the settings ask for: WAIT for
// Redis.WaitReplicas within Redis.WaitTimeout with Sentinel, none without.
func DurabilityOf(c config.Redis) Durability {
	if len(c.Sentinels()) == 0 {
		return Durability{}
	}
	return Durability{Replicas: c.WaitReplicas, Timeout: c.WaitTimeout}
}

// Wait returns once d.Replicas replicas hold every write rdb's process
// had answered before the call, or an error wrapping ErrNotDurable.
func (d Durability) Wait(ctx context.Context, rdb redis.UniversalClient) error {
	if d.Replicas <= 0 {
		return nil
	}
	var wait *redis.Cmd
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, keyDurable)
		wait = p.Do(ctx, "WAIT", d.Replicas, d.Timeout.Milliseconds())
		return nil
	})
	if err != nil {
		return fmt.Errorf("wait for %d Redis replicas: %w", d.Replicas, err)
	}
	if n, _ := wait.Int64(); n < int64(d.Replicas) {
		return fmt.Errorf("%w: %d of %d within %s", ErrNotDurable, n, d.Replicas, d.Timeout)
	}
	return nil
}

// Transient reports whether err means Redis could not take the request
// now but may in a moment: unreachable, failing over (a demoted master's
// READONLY, a master that is down or loading, one that refuses writes
// without its replicas: NOREPLICAS), or a write not durable. Such a
// request may be asked again.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotDurable) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
	}
	return strings.Contains(err.Error(), "redis: connection pool timeout") || strings.Contains(err.Error(), "redis: all sentinels specified in configuration are unreachable")
}
