// Package redisconn turns the [Redis] settings into the one go-redis
// client every Redis user of a process shares (the registry, the slots,
// leader election, pub/sub, the log followers, and asynq's client, server
// and inspector through its *FromRedisClient constructors), so all of
// them talk to the same server the same way. With Sentinel
// (Redis.SentinelAddresses) that client asks the sentinels for the master
// at every dial and drops its connections to an old one, so each user
// follows a failover by itself. It also owns the durability step that
// makes a write survive a failover (Durability).
//
// Redis Cluster is out of scope (docs/fleet.md says why).
package redisconn

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/redis/go-redis/v9"
)

// Options returns go-redis options for the settings.
func Options(c config.Redis) (*redis.Options, error) {
	if c.URL != "" {
		o, err := redis.ParseURL(c.URL)
		if err != nil {
			// The URL may hold a password: never echo it.
			return nil, fmt.Errorf("Redis.URL is not a valid redis:// or unix:// URL")
		}
		return o, nil
	}
	o := &redis.Options{Addr: c.Address, Password: c.Password, DB: c.DB}
	if strings.HasPrefix(c.Address, "/") {
		o.Network = "unix"
	}
	return o, nil
}

// Client returns a go-redis client.
func Client(c config.Redis) (redis.UniversalClient, error) {
	o, err := Options(c)
	if err != nil {
		return nil, err
	}
	return newClient(c, o), nil
}

// newClient is a client on o, or with Sentinel a failover client with
// o's credentials, database, TLS and timeouts. A failover client dials
// the master the sentinels name, switches on their +switch-master, and
// treats a READONLY reply (a connection to a master demoted to replica,
// asynq's trap in hibiken/asynq#854) as a bad connection: it closes it
// and retries on a fresh dial, which reaches the new master.
func newClient(c config.Redis, o *redis.Options) *redis.Client {
	sentinels := c.Sentinels()
	if len(sentinels) == 0 {
		return redis.NewClient(o)
	}
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:       c.SentinelMaster,
		SentinelAddrs:    sentinels,
		SentinelPassword: c.SentinelPassword,
		Username:         o.Username,
		Password:         o.Password,
		DB:               o.DB,
		TLSConfig:        o.TLSConfig,

		DialTimeout:           o.DialTimeout,
		DialerRetries:         o.DialerRetries,
		ReadTimeout:           o.ReadTimeout,
		WriteTimeout:          o.WriteTimeout,
		PoolTimeout:           o.PoolTimeout,
		MaxRetries:            o.MaxRetries,
		ContextTimeoutEnabled: o.ContextTimeoutEnabled,
	})
}

// Worker connection bounds: a worker must notice a hung or cut connection
// in seconds, since its builds stop when their hold goes unconfirmed for
// the fence's T (20s; internal/fence). go-redis's defaults would block one
// call for up to 5 dial attempts of 5s, or 5s reads retried 3 times.
const (
	WorkerDialTimeout = 2 * time.Second
	WorkerIOTimeout   = 3 * time.Second // read and write
	WorkerMaxRetries  = 1
)

// WorkerClient returns the go-redis client of a worker (its registry,
// build slots and asynq server): short dial, read and write timeouts, one
// retry, one dial retry, and contexts' deadlines honoured.
func WorkerClient(c config.Redis) (redis.UniversalClient, error) {
	o, err := Options(c)
	if err != nil {
		return nil, err
	}
	o.DialTimeout, o.DialerRetries = WorkerDialTimeout, 1
	o.ReadTimeout, o.WriteTimeout = WorkerIOTimeout, WorkerIOTimeout
	o.PoolTimeout = WorkerIOTimeout + time.Second
	o.MaxRetries = WorkerMaxRetries
	o.ContextTimeoutEnabled = true
	return newClient(c, o), nil
}

// Describe names the server without its credentials, for logs.
func Describe(c config.Redis) string {
	o, err := Options(c)
	if err != nil {
		return "(invalid Redis settings)"
	}
	if s := c.Sentinels(); len(s) > 0 {
		return fmt.Sprintf("master %q of sentinels %s db %d", c.SentinelMaster, strings.Join(s, ","), o.DB)
	}
	return fmt.Sprintf("%s %s db %d", o.Network, o.Addr, o.DB)
}

// WaitReady pings until Redis answers or ctx ends, backing off and logging
// each failure, so a process started before Redis comes up by itself.
func WaitReady(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger, what string) error {
	delay := 200 * time.Millisecond
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		log.Warn("waiting for Redis", "redis", what, "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis %s: %w", what, err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// Memory reads Redis's INFO memory: the bytes it uses (used_memory) and
// its maxmemory (0: no limit set).
func Memory(ctx context.Context, rdb redis.UniversalClient) (used, limit int64, err error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, 0, fmt.Errorf("redis memory: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch k {
		case "used_memory":
			used, err = strconv.ParseInt(v, 10, 64)
		case "maxmemory":
			limit, err = strconv.ParseInt(v, 10, 64)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("redis memory: %s: %w", k, err)
		}
	}
	return used, limit, nil
}
