package redisconn

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

func sentinelSettings(s *testenv.Sentinel) config.Redis {
	return config.Redis{SentinelAddresses: s.Addresses(), SentinelMaster: testenv.SentinelMaster,
		WaitReplicas: 2, WaitTimeout: 500 * time.Millisecond}
}

// A write counts as durable only once the replicas hold it: with both
// replicas frozen (the master cut off from them, as a partitioned old
// master is) the same write is refused as not durable, never
// acknowledged; and once the replicas are back it is durable again.
func TestDurableWritesWaitForTheirReplicas(t *testing.T) {
	t.Parallel()
	s := testenv.StartSentinel(t)
	c := sentinelSettings(s)
	rdb, err := Client(c)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx := context.Background()
	d := DurabilityOf(c)
	if d.Replicas != 2 || d.Timeout != 500*time.Millisecond {
		t.Fatalf("DurabilityOf = %+v", d)
	}
	if err := rdb.Set(ctx, "k", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.Wait(ctx, rdb); err != nil {
		t.Fatalf("wait with both replicas up: %v", err)
	}
	for _, n := range s.Nodes[1:] {
		n.Signal(syscall.SIGSTOP)
	}
	defer func() {
		for _, n := range s.Nodes[1:] {
			n.Signal(syscall.SIGCONT)
		}
	}()
	if err := rdb.Set(ctx, "k", "2", 0).Err(); err != nil {
		t.Fatal(err) // within min-replicas-max-lag the master still takes it
	}
	err = d.Wait(ctx, rdb)
	if !errors.Is(err, ErrNotDurable) || !Transient(err) {
		t.Fatalf("wait with the replicas frozen: %v, want ErrNotDurable (transient)", err)
	}
	t.Logf("with the replicas frozen: %v", err)
	for _, n := range s.Nodes[1:] {
		n.Signal(syscall.SIGCONT)
	}
	testenv.Eventually(t, 30*time.Second, "writes to be durable again", func() bool {
		return rdb.Set(ctx, "k", "3", 0).Err() == nil && d.Wait(ctx, rdb) == nil
	})
	// A write that reaches a replica (a demoted master) is transient too:
	// asking again reaches the master.
	replica := redis.NewClient(&redis.Options{Addr: s.Nodes[1].Addr, MaxRetries: -1})
	defer replica.Close()
	if err := replica.Set(ctx, "k", "4", 0).Err(); err == nil || !Transient(err) {
		t.Fatalf("a write to a replica: %v, want a transient READONLY", err)
	}
	if Transient(errors.New("build 7 not found")) || Transient(nil) {
		t.Fatal("an error that is not Redis's availability counts as transient")
	}
	if (Durability{}).Wait(ctx, nil) != nil {
		t.Fatal("the zero Durability (no Sentinel) must not wait")
	}
}

// The master frozen for longer than the sentinels' down-after, then
// resumed: a replica is promoted, the old master comes back as its
// replica, and a worker's client (one retry) keeps writing: its pooled
// connections to the old master answer READONLY (asynq's trap,
// hibiken/asynq#854), which the client drops and retries on the new
// master, so no write fails once the switch is done.
func TestAWorkersClientFollowsTheMasterAndSurvivesReadonly(t *testing.T) {
	t.Parallel()
	s := testenv.StartSentinel(t)
	rdb, err := WorkerClient(sentinelSettings(s))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx := context.Background()
	// Warm the pool: many connections to the first master.
	writes := func(n int) error {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() { errs <- rdb.Incr(ctx, fmt.Sprint("n", i%4)).Err() })
		}
		wg.Wait()
		close(errs)
		return errors.Join(collect(errs)...)
	}
	if err := writes(20); err != nil {
		t.Fatal(err)
	}
	old, err := s.Master(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old.Signal(syscall.SIGSTOP)
	testenv.Eventually(t, 60*time.Second, "the sentinels to promote a replica", func() bool {
		m, err := s.Master(ctx)
		return err == nil && m != old
	})
	old.Signal(syscall.SIGCONT)
	testenv.Eventually(t, 60*time.Second, "the old master to come back as a replica", func() bool { return old.Role() == "slave" })
	// The old master is a replica now; the first writes may still fail
	// while the client learns of the switch, then none does.
	testenv.Eventually(t, 30*time.Second, "writes to reach the new master", func() bool { return writes(20) == nil })
	for range 5 {
		if err := writes(20); err != nil {
			t.Fatalf("a write after the switch: %v", err)
		}
	}
	m, _ := s.Master(ctx)
	if m.Role() != "master" {
		t.Fatalf("the sentinels' master %s says it is %q", m.Addr, m.Role())
	}
}

func collect(c chan error) []error {
	var out []error
	for err := range c {
		out = append(out, err)
	}
	return out
}
