package leader

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

type campaign struct {
	mu      sync.Mutex
	terms   []string // "owner token"
	tokens  []int64
	leaders atomic.Int32
	peak    atomic.Int32
}

func (c *campaign) run(t *testing.T, rdb redis.UniversalClient, owner string) (stop func()) {
	e := New(rdb, "lease", owner, testenv.Logger(t))
	e.TTL, e.RenewEvery, e.RetryEvery = time.Second, 100*time.Millisecond, 50*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(ctx, func(ctx context.Context, term *Term) {
			n := c.leaders.Add(1)
			for m := c.peak.Load(); n > m && !c.peak.CompareAndSwap(m, n); m = c.peak.Load() {
			}
			c.mu.Lock()
			c.terms = append(c.terms, owner)
			c.tokens = append(c.tokens, term.Token)
			c.mu.Unlock()
			<-ctx.Done()
			c.leaders.Add(-1)
		})
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func (c *campaign) count() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.terms) }

func TestOneLeaderAtATimeWithGrowingTokens(t *testing.T) {
	t.Parallel()
	rdb, _ := redisServer.DB(t)
	c := &campaign{}
	stopA := c.run(t, rdb, "a")
	testenv.Eventually(t, 5*time.Second, "a to lead", func() bool { return c.count() == 1 })
	c.run(t, rdb, "b")
	c.run(t, rdb, "c")
	// A clean shutdown gives the lease up: a successor leads at once.
	stopA()
	stopped := time.Now()
	testenv.Eventually(t, 5*time.Second, "a successor", func() bool { return c.count() == 2 })
	if took := time.Since(stopped); took > 900*time.Millisecond {
		t.Fatalf("successor after a clean shutdown took %s, want less than the 1s lease (it was handed over)", took)
	}
	if c.peak.Load() != 1 {
		t.Fatalf("%d leaders at once", c.peak.Load())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.terms[0] != "a" || c.terms[1] == "a" || c.tokens[1] <= c.tokens[0] {
		t.Fatalf("terms %v with tokens %v: want a, then another with a larger token", c.terms, c.tokens)
	}
}

func TestLeaderStepsDownWhenItsLeaseIsTakenOver(t *testing.T) {
	t.Parallel()
	rdb, _ := redisServer.DB(t)
	c := &campaign{}
	c.run(t, rdb, "a")
	testenv.Eventually(t, 5*time.Second, "a to lead", func() bool { return c.leaders.Load() == 1 })
	// Someone else's term (e.g. after a long pause of a).
	rdb.Set(context.Background(), "lease", "999:z", time.Hour)
	testenv.Eventually(t, 5*time.Second, "a to step down", func() bool { return c.leaders.Load() == 0 })
	if v := rdb.Get(context.Background(), "lease").Val(); v != "999:z" {
		t.Fatalf("lease = %q; the old leader must not touch its successor's lease", v)
	}
}
