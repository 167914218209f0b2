// Package reconcile repairs what a Redis failover or crash can leave
// inconsistent between the build records (internal/registry), asynq's
// tasks and the build slots (internal/semaphore): a build whose record
// says queued, waiting or running while its task is gone; an active task
// without a lease, which asynq's recoverer never sees; a slot held by an
// attempt that is no longer its build's current one; a task whose build
// record is gone.
//
// One reconciler runs per fleet (internal/leader), on the API replicas.
// It never starts a build itself: it puts a task back, moves an active
// task back to pending, frees a slot or deletes a task, and the attempt
// tokens decide, as always, which copy of a build may write. Nothing is
// repaired on sight: an inconsistency must be seen unchanged for Grace
// first, longer than a worker takes to stop a build it can no longer
// confirm (Worker.FenceAfter), so that work in flight (a record whose task
// is being written, a task between its dequeue and its attempt's begin)
// is never taken for a loss. docs/fleet.md ("The reconciler") says more.
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/leader"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/redis/go-redis/v9"
)

// The kinds of repair, the metric's label values.
const (
	KindLostTask     = "lost_task"     // an unfinished build with no task: its task is queued again
	KindUnleasedTask = "unleased_task" // an active task with no lease: moved back to pending
	KindStaleSlot    = "stale_slot"    // a slot held by a superseded attempt: freed
	KindOrphanTask   = "orphan_task"   // a task whose build record is gone: deleted
)

// Kinds lists every kind, for the metric's labels.
var Kinds = []string{KindLostTask, KindUnleasedTask, KindStaleSlot, KindOrphanTask}

// keyLease is the reconciler's leader lease.
const keyLease = "pkgfleet:reconcile:leader"

// Reconciler finds and repairs inconsistencies, one pass every Interval
// while this process leads.
type Reconciler struct {
	Redis     redis.UniversalClient
	Registry  *registry.Registry
	Enqueuer  *queue.Enqueuer // Requeue, for a lost task
	Inspector *asynq.Inspector
	Log       *slog.Logger
	Owner     string // this process, in the lease

	Interval         time.Duration // between passes (Reconcile.Interval)
	Grace            time.Duration // an inconsistency is repaired once seen this long (Reconcile.Grace)
	BuildConcurrency int           // Git.BuildConcurrency, for a freed slot's waiters

	Repaired func(kind string)     // counts a repair (the metric); may be nil
	Lease    func(*leader.Elector) // adjusts the election (tests); may be nil
	Now      func() time.Time      // default time.Now; tests move it past Grace

	// suspects maps an inconsistency to when a pass first saw it; only
	// the leading goroutine touches it.
	suspects map[string]time.Time
}

// Run takes part in the election and reconciles while leading, until ctx
// ends.
func (r *Reconciler) Run(ctx context.Context) error {
	e := leader.New(r.Redis, keyLease, r.Owner, r.Log)
	if r.Lease != nil {
		r.Lease(e)
	}
	return e.Run(ctx, r.lead)
}

func (r *Reconciler) lead(ctx context.Context, term *leader.Term) {
	r.Log.Info("reconciler active", "token", term.Token, "interval", r.Interval, "grace", r.Grace)
	// A new term starts with no suspects: what the last leader saw is
	// seen again, and waits its Grace again.
	r.suspects = nil
	for {
		if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("reconciler: pass incomplete; the next one tries again", "error", err)
		}
		every := r.Interval
		if every <= 0 {
			every = time.Minute
		}
		d := every - every/10 + rand.N(every/5+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// pass is one pass's view: the suspects it saw, and when.
type pass struct {
	r    *Reconciler
	now  time.Time
	seen map[string]time.Time
}

// due records suspect id and reports whether it has been seen for Grace.
func (p *pass) due(id string) bool {
	first, ok := p.r.suspects[id]
	if !ok {
		first = p.now
	}
	p.seen[id] = first
	return p.now.Sub(first) >= p.r.Grace
}

// repaired logs one repair in one line and counts it.
func (p *pass) repaired(kind, what string, attrs ...any) {
	p.r.Log.Warn("reconciler repaired: "+what, append([]any{"kind", kind}, attrs...)...)
	if p.r.Repaired != nil {
		p.r.Repaired(kind)
	}
}

// Pass looks once for every kind of inconsistency and repairs those seen
// for Grace; it returns how many it repaired.
func (r *Reconciler) Pass(ctx context.Context) (int, error) {
	p := &pass{r: r, now: r.now(), seen: map[string]time.Time{}}
	queues, err := r.buildQueues()
	n := 0
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, step := range []func(context.Context, []string) (int, error){p.lostTasks, p.unleasedTasks, p.staleSlots, p.orphanTasks} {
		k, err := step(ctx, queues)
		n += k
		if err != nil {
			errs = append(errs, err)
		}
	}
	// Only what this pass saw stays suspect: what resolved itself, or was
	// repaired, starts its grace again should it come back.
	r.suspects = p.seen
	return n, errors.Join(errs...)
}

// buildQueues lists asynq's queues of builds.
func (r *Reconciler) buildQueues() ([]string, error) {
	all, err := r.Inspector.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	var out []string
	for _, q := range all {
		if strings.HasPrefix(q, queue.Queue("")) {
			out = append(out, q)
		}
	}
	return out, nil
}

// live says whether a task in state s will still run its build.
func live(s asynq.TaskState) bool {
	switch s {
	case asynq.TaskStatePending, asynq.TaskStateActive, asynq.TaskStateScheduled, asynq.TaskStateRetry:
		return true
	}
	return false
}

// lostTasks queues again the task of each build that is queued, waiting
// or running while no live task will run it.
func (p *pass) lostTasks(ctx context.Context, _ []string) (int, error) {
	builds, err := p.r.Registry.Unfinished(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, b := range builds {
		q, id := queue.Queue(b.Language), queue.TaskID(b.Source, b.Builder, b.SHA)
		task := "none"
		info, err := p.r.Inspector.GetTaskInfo(q, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		case err != nil:
			errs = append(errs, fmt.Errorf("look up task of build %d: %w", b.ID, err))
			continue
		case live(info.State) && payloadBuild(info.Payload) == b.ID:
			if ok, err := p.inPlace(ctx, q, info); err != nil || ok {
				if err != nil {
					errs = append(errs, err)
				}
				continue
			}
			task = info.State.String() + ", on no list"
		default:
			task = info.State.String()
		}
		// The record as seen, so that a build that moved on (its worker
		// wrote meanwhile) is a new suspect, not a late repair.
		if !p.due(fmt.Sprintf("%s/%d/%s/%d", KindLostTask, b.ID, b.Status, b.AttemptToken)) {
			continue
		}
		cur, err := p.r.Registry.Build(ctx, b.ID)
		if err != nil || registry.Terminal(cur.Status) || cur.Status != b.Status || cur.AttemptToken != b.AttemptToken {
			continue // finished or moved on meanwhile
		}
		if strings.HasSuffix(task, ", on no list") {
			// Its hash alone would make the new task's id a conflict.
			if err := p.dropStranded(ctx, q, info); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := p.r.Enqueuer.Requeue(ctx, cur); err != nil {
			errs = append(errs, fmt.Errorf("queue build %d again: %w", b.ID, err))
			continue
		}
		p.repaired(KindLostTask, "a build with no task to run it was queued again",
			"build", b.ID, "status", b.Status, "task", id, "task_state", task, "source", b.Source, "builder", b.Builder)
		n++
	}
	return n, errors.Join(errs...)
}

// where is the list or sorted set in which a task in state s sits, and
// whether it is a list.
func where(q string, s asynq.TaskState) (key string, isList bool) {
	switch s {
	case asynq.TaskStatePending:
		return queue.PendingKey(q), true
	case asynq.TaskStateActive:
		return queue.ActiveKey(q), true
	case asynq.TaskStateScheduled:
		return queue.ScheduledKey(q), false
	case asynq.TaskStateRetry:
		return queue.RetryKey(q), false
	}
	return "", false
}

// inPlace says whether a live task sits where its state says. One that
// does not is run by no one: asynq's retry script takes a task off the
// active list first and then fails when its lease entry is gone
// (hibiken/asynq#1051), leaving a hash that says active on no list.
func (p *pass) inPlace(ctx context.Context, q string, info *asynq.TaskInfo) (bool, error) {
	key, isList := where(q, info.State)
	var err error
	if isList {
		err = p.r.Redis.LPos(ctx, key, info.ID, redis.LPosArgs{}).Err()
	} else {
		err = p.r.Redis.ZScore(ctx, key, info.ID).Err()
	}
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find task %s in %s: %w", info.ID, key, err)
	}
	return true, nil
}

// dropStranded deletes a task's hash while it is still in the state it
// was seen in and still on no list: KEYS hash, the state's list or set;
// ARGV state, "list" or "zset", task id. 1: deleted.
var dropStranded = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end
if ARGV[2] == 'list' then
  if redis.call('LPOS', KEYS[2], ARGV[3]) then return 0 end
elseif redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
`)

func (p *pass) dropStranded(ctx context.Context, q string, info *asynq.TaskInfo) error {
	key, isList := where(q, info.State)
	kind := "zset"
	if isList {
		kind = "list"
	}
	n, err := dropStranded.Run(ctx, p.r.Redis, []string{queue.TaskKey(q, info.ID), key}, info.State.String(), kind, info.ID).Int()
	if err != nil {
		return fmt.Errorf("drop stranded task %s: %w", info.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("task %s moved meanwhile; left for the next pass", info.ID)
	}
	return nil
}

func payloadBuild(raw []byte) int64 {
	var pl queue.Payload
	if json.Unmarshal(raw, &pl) != nil {
		return 0
	}
	return pl.BuildID
}

// requeueUnleased moves an active task that has no lease back to pending
// (asynq's Requeue without the lease it requires): KEYS active, lease,
// pending, task hash; ARGV task id. 0: it has a lease (asynq's recoverer
// sees it) or is no longer active; 1: moved; 2: its hash was gone, so it
// was only taken off the active list.
var requeueUnleased = redis.NewScript(`
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[4]) == 0 then return 2 end
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], 'state', 'pending')
return 1
`)

// unleasedTasks moves back to pending the active tasks that have no lease:
// asynq's recoverer only looks at leases that expired, so such a task
// would stay active forever (hibiken/asynq#1051, #1144). A task whose
// lease merely expired is left to the recoverer.
func (p *pass) unleasedTasks(ctx context.Context, queues []string) (int, error) {
	n := 0
	var errs []error
	for _, q := range queues {
		ids, err := p.r.Redis.LRange(ctx, queue.ActiveKey(q), 0, -1).Result()
		if err != nil {
			errs = append(errs, fmt.Errorf("list active tasks of %s: %w", q, err))
			continue
		}
		for _, id := range ids {
			err := p.r.Redis.ZScore(ctx, queue.LeaseKey(q), id).Err()
			if err == nil {
				continue
			}
			if !errors.Is(err, redis.Nil) {
				errs = append(errs, fmt.Errorf("lease of task %s: %w", id, err))
				continue
			}
			if !p.due(KindUnleasedTask + "/" + q + "/" + id) {
				continue
			}
			keys := []string{queue.ActiveKey(q), queue.LeaseKey(q), queue.PendingKey(q), queue.TaskKey(q, id)}
			res, err := requeueUnleased.Run(ctx, p.r.Redis, keys, id).Int()
			if err != nil {
				errs = append(errs, fmt.Errorf("requeue task %s: %w", id, err))
				continue
			}
			switch res {
			case 1:
				p.repaired(KindUnleasedTask, "an active task with no lease was moved back to pending", "queue", q, "task", id)
				n++
			case 2:
				p.repaired(KindUnleasedTask, "an active task with no lease and no data was taken off the active list", "queue", q, "task", id)
				n++
			}
		}
	}
	return n, errors.Join(errs...)
}

// staleSlots frees the build slots held by attempts that are no longer
// their build's current one. Such a holder's writes are refused and its
// worker stopped it within Worker.FenceAfter of the attempt that
// superseded it; its lease is not renewed any more, so this only matters
// when a lease reaches far ahead (a clock or a restored store).
func (p *pass) staleSlots(ctx context.Context, _ []string) (int, error) {
	sema := semaphore.New(p.r.Redis)
	slots := &queue.Slots{Sema: sema, Registry: p.r.Registry, Inspector: p.r.Inspector, BuildConcurrency: p.r.BuildConcurrency}
	keys, err := sema.HeldKeys(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, key := range keys {
		holders, err := sema.Holders(ctx, key)
		if err != nil {
			errs = append(errs, fmt.Errorf("holders of %s: %w", key, err))
			continue
		}
		for _, h := range holders {
			build, token, ok := parseHolder(h)
			if !ok {
				continue
			}
			cur, err := p.r.Registry.CurrentToken(ctx, build)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if cur == token || !p.due(KindStaleSlot+"/"+key+"/"+h) {
				continue
			}
			if _, err := slots.Evict(ctx, key, h); err != nil {
				errs = append(errs, err)
				continue
			}
			p.repaired(KindStaleSlot, "a build slot held by an attempt that is no longer current was freed",
				"slots", key, "build", build, "holder_token", token, "current_token", cur)
			n++
		}
	}
	return n, errors.Join(errs...)
}

// parseHolder reads a slot holder, "build id:attempt token" (the
// pipeline's holderToken).
func parseHolder(h string) (build, token int64, ok bool) {
	a, b, found := strings.Cut(h, ":")
	if !found {
		return 0, 0, false
	}
	build, err1 := strconv.ParseInt(a, 10, 64)
	token, err2 := strconv.ParseInt(b, 10, 64)
	return build, token, err1 == nil && err2 == nil
}

// orphanTasks deletes the tasks that are not running and whose build
// record is gone: the write that recorded the build was lost. An active
// one is its worker's: the attempt's begin finds no record and ends it.
func (p *pass) orphanTasks(ctx context.Context, queues []string) (int, error) {
	n := 0
	var errs []error
	lists := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		p.r.Inspector.ListPendingTasks, p.r.Inspector.ListScheduledTasks, p.r.Inspector.ListRetryTasks, p.r.Inspector.ListArchivedTasks,
	}
	for _, q := range queues {
		for _, list := range lists {
			for page := 1; ; page++ {
				const size = 500
				tasks, err := list(q, asynq.Page(page), asynq.PageSize(size))
				if err != nil {
					errs = append(errs, fmt.Errorf("list tasks of %s: %w", q, err))
					break
				}
				for _, t := range tasks {
					k, err := p.orphan(ctx, q, t)
					n += k
					if err != nil {
						errs = append(errs, err)
					}
				}
				if len(tasks) < size {
					break
				}
			}
		}
	}
	return n, errors.Join(errs...)
}

func (p *pass) orphan(ctx context.Context, q string, t *asynq.TaskInfo) (int, error) {
	if t.Type != queue.TypeBuild {
		return 0, nil
	}
	id := payloadBuild(t.Payload)
	if _, err := p.r.Registry.Build(ctx, id); !errors.Is(err, registry.ErrNotFound) {
		return 0, err
	}
	if !p.due(fmt.Sprintf("%s/%s/%s/%d", KindOrphanTask, q, t.ID, id)) {
		return 0, nil
	}
	if err := p.r.Inspector.DeleteTask(q, t.ID); err != nil {
		if errors.Is(err, asynq.ErrTaskNotFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("delete task %s of build %d: %w", t.ID, id, err)
	}
	p.repaired(KindOrphanTask, "a task whose build record is gone was deleted", "queue", q, "task", t.ID, "build", id, "task_state", t.State.String())
	return 1, nil
}
