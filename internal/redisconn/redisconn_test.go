package redisconn

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/redis/go-redis/v9"
)

// A server that accepts and then never answers, like a Redis behind a
// frozen relay: the worker's client must give up, with few attempts,
// instead of blocking.
func TestAWorkersClientGivesUpOnAHungServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			defer c.Close() // held open, never answered
		}
	}()
	rdb, err := WorkerClient(config.Redis{Address: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	err = rdb.Ping(context.Background()).Err()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ping of a hung server: %v, want a timeout", err)
	}
	if n := accepted.Load(); n > 1+WorkerMaxRetries {
		t.Fatalf("%d connections for one ping, want at most %d", n, 1+WorkerMaxRetries)
	}
	o := rdb.(*redis.Client).Options()
	if o.ReadTimeout != WorkerIOTimeout || o.DialTimeout != WorkerDialTimeout || o.MaxRetries != WorkerMaxRetries || !o.ContextTimeoutEnabled {
		t.Fatalf("worker client options: %+v", o)
	}
}
