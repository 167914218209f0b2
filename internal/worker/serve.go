package worker

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/pipeline"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/redis/go-redis/v9"
)

// serve takes build tasks from the queues of the languages the worker
// builds until ctx ends; it leaves the servers it started for shutdown.
//
// An asynq Server fixes its queues and concurrency when it starts, and a
// language that passes a re-probe (or a sandbox that comes back and
// changes the slots) needs both changed. Restarting the server would
// requeue, after the grace period, every build that runs longer; one
// server per language would let each take a task while the worker's
// slots are full, and hold it from idle workers for a whole build. So
// serve starts a new server with the new queues and slots and Stops the
// old one: a stopped server takes no task, keeps its running builds to
// the end, and is shut down with the others when the worker stops (its
// remaining goroutines are cheap, and there are at most a few changes in
// a worker's life: each adds a language or a sandbox). Meanwhile the
// worker-wide gate holds all of them to the worker's slots: a task the
// new server took while the old one still builds waits for a slot here,
// once per change.
func (w *Worker) serve(ctx context.Context, rc redis.UniversalClient) error {
	var current []string
	currentSlots := 0
	for {
		queues, slots := w.queuesAndSlots()
		w.gate.setLimit(slots)
		if len(queues) > 0 && (!slices.Equal(queues, current) || slots != currentSlots) {
			srv := w.newServer(rc, queues, slots)
			if err := srv.Start(w.gated()); err != nil {
				return fmt.Errorf("worker: %w", err)
			}
			w.servers.mu.Lock()
			if n := len(w.servers.list); n > 0 {
				w.servers.list[n-1].Stop()
			}
			w.servers.list = append(w.servers.list, srv)
			w.servers.mu.Unlock()
			if current == nil {
				w.log.Info("worker ready", "name", w.opts.Name, "queues", strings.Join(queues, ","), "slots", slots)
				w.ready.Store(true)
			} else {
				w.log.Info("worker takes builds from new queues", "queues", strings.Join(queues, ","), "slots", slots)
			}
			current, currentSlots = queues, slots
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.changed:
		}
	}
}

// queuesAndSlots is what the worker serves now, queues sorted.
func (w *Worker) queuesAndSlots() ([]string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var queues []string
	if w.storeErr != nil {
		return nil, w.slots // no builds while the store refuses them
	}
	for lang := range w.tools {
		queues = append(queues, queue.Queue(lang))
	}
	slices.Sort(queues)
	return queues, w.slots
}

// changes tells serve that the queues or slots changed.
func (w *Worker) changes() {
	select {
	case w.changed <- struct{}{}:
	default: // one pending signal is enough: serve re-reads everything
	}
}

func (w *Worker) newServer(rc redis.UniversalClient, queues []string, slots int) *asynq.Server {
	retry := w.opts.RetryDelay
	if retry == nil {
		retry = defaultRetryDelay
	}
	check := cmp.Or(w.opts.TaskCheckInterval, w.cfg.Worker.TaskCheckInterval, DefaultTaskCheckInterval)
	weights := map[string]int{}
	for _, q := range queues {
		weights[q] = 1
	}
	return asynq.NewServerFromRedisClient(rc, asynq.Config{
		Concurrency:              slots,
		Queues:                   weights,
		ShutdownTimeout:          w.cfg.Worker.ShutdownGrace,
		TaskCheckInterval:        check,
		DelayedTaskCheckInterval: w.opts.DelayedTaskCheckInterval,
		IsFailure:                pipeline.IsFailure,
		RetryDelayFunc: func(n int, err error, _ *asynq.Task) time.Duration {
			return pipeline.RetryDelay(n, err, retry)
		},
		Logger:   asynqLogger{w.log.With("component", "asynq")},
		LogLevel: asynq.WarnLevel,
	})
}

// gated is the build handler behind the worker-wide slot gate.
func (w *Worker) gated() asynq.Handler {
	mux := asynq.NewServeMux()
	mux.HandleFunc(queue.TypeBuild, func(ctx context.Context, t *asynq.Task) error {
		// On shutdown ctx ends with the grace period and asynq requeues
		// the task without counting an attempt.
		if err := w.gate.acquire(ctx); err != nil {
			return err
		}
		defer w.gate.release()
		return w.pipeline.Load().ProcessTask(ctx, t)
	})
	return mux
}

// shutdown stops every server serve started, in parallel so that each
// running build gets the same grace period.
func (w *Worker) shutdown() {
	w.servers.mu.Lock()
	list := w.servers.list
	w.servers.list = nil
	w.servers.mu.Unlock()
	var wg sync.WaitGroup
	for _, srv := range list {
		wg.Go(srv.Shutdown)
	}
	wg.Wait()
}

// servers are the asynq servers serve started; all but the last are
// stopped (they only finish their builds).
type servers struct {
	mu   sync.Mutex
	list []*asynq.Server
}

// gate bounds the builds of one worker process across its asynq servers.
// Its limit may change while tasks wait or run.
type gate struct {
	mu    sync.Mutex
	limit int
	held  int
	wake  chan struct{} // closed when a slot frees or the limit grows
}

func (g *gate) acquire(ctx context.Context) error {
	for {
		g.mu.Lock()
		if g.held < g.limit {
			g.held++
			g.mu.Unlock()
			return nil
		}
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		wake := g.wake
		g.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held--
	g.signal()
}

func (g *gate) setLimit(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.limit = n
	g.signal()
}

// signal wakes every waiter to look again; the caller holds g.mu.
func (g *gate) signal() {
	if g.wake != nil {
		close(g.wake)
		g.wake = nil
	}
}
