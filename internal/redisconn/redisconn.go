// Package redisconn turns the [Redis] settings into the connection options
// of go-redis (the registry) and asynq (the queue), so both always talk to
// the same server the same way.
package redisconn

import (
	"context"
	"fmt"
	"log/slog"
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
	return redis.NewClient(o), nil
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
	return redis.NewClient(o), nil
}

// Describe names the server without its credentials, for logs.
func Describe(c config.Redis) string {
	o, err := Options(c)
	if err != nil {
		return "(invalid Redis settings)"
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
