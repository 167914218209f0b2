package semaphore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/notify"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

// process is what one worker process has: its own Redis connections, its
// own subscription and its own Semaphore.
type process struct {
	rdb   *redis.Client
	sema  *Semaphore
	hub   *notify.Hub
	cmds  *testenv.CommandCounter
	renew time.Duration // how often held leases are renewed
	place time.Duration // how long a listening waiter's place lasts
}

// held is a slot acquire holds, renewed with Lease.Renew every renew
// until released or the process "crashes".
type held struct {
	*Lease
	stop, done, lost chan struct{}
}

// acquire is what a caller that waits in its process does: TryAcquire
// (listening, WakeBy "") until a slot is granted or ctx ends, woken by a
// release's pub/sub message or after CheckInterval; then Lease.Renew
// every renew. waiting, when not nil, sees each new place in line.
func (p *process) acquire(ctx context.Context, key string, limit int, token string, order int64, waiting func(Wait)) (*held, error) {
	woken, stop := p.hub.Listen(WakeChannel, token)
	defer stop()
	ask := Ask{Waiter: token, Holder: token, Order: order, PlaceFor: p.place}
	var last Wait
	for {
		l, w, err := p.sema.TryAcquire(ctx, key, limit, ask)
		switch {
		case err != nil && ctx.Err() != nil:
			_, _ = p.sema.Leave(context.WithoutCancel(ctx), key, limit, token)
			return nil, ctx.Err()
		case l != nil:
			h := &held{Lease: l, stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
			go h.renew(p.renew)
			return h, nil
		case err == nil && w != last && waiting != nil:
			waiting(w)
			last = w
		}
		select {
		case <-ctx.Done():
			_, _ = p.sema.Leave(context.WithoutCancel(ctx), key, limit, token)
			return nil, ctx.Err()
		case <-woken:
		case <-time.After(p.sema.CheckInterval()):
		}
	}
}

func (h *held) renew(every time.Duration) {
	defer close(h.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		err := h.Renew(ctx)
		cancel()
		if errors.Is(err, ErrLost) {
			close(h.lost)
			return
		}
	}
}

// crash stops renewing without releasing, as a dead holder does.
func (h *held) crash() {
	close(h.stop)
	<-h.done
}

// Lost is closed when the lease ran out before it was renewed.
func (h *held) Lost() <-chan struct{} { return h.lost }

// Release stops renewing and gives the slot back.
func (h *held) Release(ctx context.Context) ([]Woken, error) {
	select {
	case <-h.stop:
	default:
		h.crash()
	}
	return h.Lease.Release(ctx)
}

// setup returns n processes sharing one fresh Redis database.
func setup(t *testing.T, n int, tune func(*process)) []*process {
	t.Helper()
	_, db := redisServer.DB(t)
	var out []*process
	for range n {
		rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: redisServer.Socket, DB: db})
		cc := &testenv.CommandCounter{}
		rdb.AddHook(cc)
		hub := notify.New(rdb, testenv.Logger(t), WakeChannel)
		s := New(rdb)
		s.HoldLease, s.CheckEvery = 2*time.Second, 200*time.Millisecond
		p := &process{rdb: rdb, sema: s, hub: hub, cmds: cc, renew: 200 * time.Millisecond, place: 2 * time.Second}
		if tune != nil {
			tune(p)
		}
		t.Cleanup(func() { hub.Close(); rdb.Close() })
		out = append(out, p)
	}
	return out
}

func TestConcurrencyLimitHoldsAcrossProcesses(t *testing.T) {
	t.Parallel()
	procs := setup(t, 3, nil)
	const limit, builds = 2, 8
	var running, peak atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, builds)
	for i := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := procs[i%len(procs)]
			l, err := p.acquire(context.Background(), "src/tags", limit, fmt.Sprint(i+1), int64(i+1), nil)
			if err != nil {
				errs <- err
				return
			}
			n := running.Add(1)
			for {
				m := peak.Load()
				if n <= m || peak.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(50 * time.Millisecond) // the "build"
			running.Add(-1)
			_, err = l.Release(context.Background())
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := peak.Load(); got != limit {
		t.Fatalf("observed maximum concurrency %d, want exactly %d", got, limit)
	}
}

func TestCrashedHoldersSlotReturnsAfterItsLease(t *testing.T) {
	t.Parallel()
	procs := setup(t, 2, func(p *process) { p.sema.HoldLease = time.Second })
	ctx := context.Background()
	crashed, err := procs[0].acquire(ctx, "src/commits", 1, "1", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The holder's process dies: its lease is no longer renewed and it
	// never releases.
	crashed.crash()
	start := time.Now()

	got, err := procs[1].acquire(ctx, "src/commits", 1, "2", 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release(ctx)
	waited := time.Since(start)
	// The last renewal was at most renew before the crash.
	if waited < time.Second-procs[0].renew-100*time.Millisecond || waited > time.Second+time.Second {
		t.Fatalf("slot came back after %s, want about the 1s lease", waited)
	}
	t.Logf("slot of the crashed holder came back after %s (lease 1s)", waited.Round(time.Millisecond))
}

func TestHeldLeaseIsRenewedBeyondItsDuration(t *testing.T) {
	t.Parallel()
	procs := setup(t, 2, func(p *process) { p.sema.HoldLease, p.renew = 500*time.Millisecond, 100*time.Millisecond })
	ctx := context.Background()
	l, err := procs[0].acquire(ctx, "k", 1, "a", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, cancel := context.WithTimeout(ctx, 1500*time.Millisecond) // three lease durations
	defer cancel()
	if _, err := procs[1].acquire(other, "k", 1, "b", 2, nil); err == nil {
		t.Fatal("a second holder got the only slot while the first renewed its lease")
	}
	select {
	case <-l.Lost():
		t.Fatal("lease reported lost while it was renewed")
	default:
	}
	if _, err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestWaitersTakeSlotsInOrder(t *testing.T) {
	t.Parallel()
	procs := setup(t, 2, func(p *process) { p.sema.CheckEvery = time.Hour }) // only wake-ups move waiters
	ctx := context.Background()
	head, err := procs[0].acquire(ctx, "k", 1, "holder", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []int64
	var wg sync.WaitGroup
	for i, n := range []int64{5, 3, 9, 1, 7} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := procs[i%2].acquire(ctx, "k", 1, fmt.Sprint(n), n, nil)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, n)
			mu.Unlock()
			l.Release(ctx)
		}()
	}
	testenv.Eventually(t, 5*time.Second, "five waiters in the queue", func() bool {
		return procs[0].rdb.ZCard(ctx, keys("k")[1]).Val() == 5
	})
	head.Release(ctx)
	wg.Wait()
	if fmt.Sprint(order) != "[1 3 5 7 9]" {
		t.Fatalf("slots taken in order %v, want [1 3 5 7 9] (lowest build id first)", order)
	}
}

func TestWaiterReportsItsPlace(t *testing.T) {
	t.Parallel()
	procs := setup(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 2 {
		if _, err := procs[0].acquire(ctx, "k", 2, fmt.Sprint("h", i), int64(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	places := make(chan Wait, 10)
	go procs[0].acquire(ctx, "k", 2, "w", 10, func(w Wait) { places <- w })
	if w := <-places; w != (Wait{Position: 1, InUse: 2, Limit: 2}) {
		t.Fatalf("wait = %+v, want position 1 with 2 of 2 slots in use", w)
	}
}

func TestCanceledWaiterLeavesTheQueue(t *testing.T) {
	t.Parallel()
	procs := setup(t, 1, func(p *process) { p.sema.CheckEvery = time.Hour })
	ctx := context.Background()
	holder, err := procs[0].acquire(ctx, "k", 1, "holder", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := procs[0].acquire(wctx, "k", 1, "first", 1, nil); errc <- err }()
	testenv.Eventually(t, 5*time.Second, "the first waiter to queue", func() bool {
		return procs[0].rdb.ZCard(ctx, keys("k")[1]).Val() == 1
	})
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("a canceled waiter got a slot")
	}
	if n := procs[0].rdb.ZCard(ctx, keys("k")[1]).Val(); n != 0 {
		t.Fatalf("%d waiters left in the queue after the only one was canceled", n)
	}
	// The next waiter is not blocked behind the canceled one.
	done := make(chan error, 1)
	go func() {
		l, err := procs[0].acquire(ctx, "k", 1, "second", 2, nil)
		if err == nil {
			l.Release(ctx)
		}
		done <- err
	}()
	holder.Release(ctx)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second waiter was not woken by the release")
	}
}

func TestReleaseWorksWithACanceledContext(t *testing.T) {
	t.Parallel()
	procs := setup(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	l, err := procs[0].acquire(ctx, "k", 1, "a", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel() // the build's context ends (cancel, timeout, shutdown)
	if _, err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _ := procs[0].sema.Holders(context.Background(), "k"); len(h) != 0 {
		t.Fatalf("holders after release: %v", h)
	}
}

// A waiting build costs one script call per CheckEvery and one per
// wake-up. With the default CheckEvery of 15s that is 4 commands a minute.
func TestWaitingBuildCostsFewRedisCommands(t *testing.T) {
	t.Parallel()
	const check = 100 * time.Millisecond
	procs := setup(t, 2, func(p *process) { p.sema.CheckEvery = check })
	ctx := context.Background()
	holder, err := procs[0].acquire(ctx, "k", 1, "holder", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	waiter := procs[1]
	waiter.cmds.Reset()
	start := time.Now()
	acquired := make(chan *held, 1)
	go func() {
		l, err := waiter.acquire(ctx, "k", 1, "w", 1, nil)
		if err != nil {
			t.Error(err)
		}
		acquired <- l
	}()
	// Measure a window of waiting (this sleep is the measurement, not a
	// synchronisation).
	time.Sleep(20 * check)
	n, by := waiter.cmds.Total()
	elapsed := time.Since(start)
	checks := float64(elapsed) / float64(check)
	perCheck := float64(n) / checks
	t.Logf("waiting %s cost %d commands %v: %.2f per check, so %.1f a minute at the default CheckEvery %s",
		elapsed.Round(time.Millisecond), n, by, perCheck, perCheck*float64(time.Minute/DefaultCheckEvery), DefaultCheckEvery)
	if perCheck > 1.3 {
		t.Fatalf("a waiter sent %.2f commands per check, want about 1 (%v)", perCheck, by)
	}
	holder.Release(ctx)
	l := <-acquired
	if l == nil {
		t.Fatal("waiter did not get the slot")
	}
	l.Release(ctx)
}

func TestReleaseWakesTheNextWaiterAtOnce(t *testing.T) {
	t.Parallel()
	procs := setup(t, 2, func(p *process) { p.sema.CheckEvery = time.Hour })
	ctx := context.Background()
	holder, err := procs[0].acquire(ctx, "k", 1, "holder", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan struct{})
	got := make(chan time.Time, 1)
	go func() {
		l, err := procs[1].acquire(ctx, "k", 1, "w", 1, func(Wait) { close(queued) })
		if err == nil {
			got <- time.Now()
			l.Release(ctx)
		}
	}()
	<-queued
	released := time.Now()
	holder.Release(ctx)
	select {
	case at := <-got:
		t.Logf("next waiter took the slot %s after the release", at.Sub(released).Round(time.Microsecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter was not woken by the release (its periodic check is an hour away)")
	}
}

func TestLeaveGivesUpAPlaceButNotAHeldSlot(t *testing.T) {
	t.Parallel()
	procs := setup(t, 1, func(p *process) { p.sema.CheckEvery = time.Hour })
	ctx := context.Background()
	held, err := procs[0].acquire(ctx, "k", 1, "running", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A build canceled while it runs: its slot stays until its holder has
	// stopped it and releases.
	if _, err := procs[0].sema.Leave(ctx, "k", 1, "running"); err != nil {
		t.Fatal(err)
	}
	if h, _ := procs[0].sema.Holders(ctx, "k"); len(h) != 1 {
		t.Fatalf("holders after Leave: %v", h)
	}
	held.Release(ctx)
}

// BenchmarkAcquireRelease is one uncontended slot taken and given back:
// two script calls.
func BenchmarkAcquireRelease(b *testing.B) {
	_, db := redisServer.DB(b)
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: redisServer.Socket, DB: db})
	defer rdb.Close()
	s := New(rdb)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		l, _, err := s.TryAcquire(ctx, "bench", 2, Ask{Waiter: fmt.Sprint(i), Holder: fmt.Sprint(i), Order: int64(i), PlaceFor: time.Minute})
		if err != nil || l == nil {
			b.Fatal(err)
		}
		if _, err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
