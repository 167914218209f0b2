// Package poller follows git-builders' remotes and queues builds of what
// is new: each new head of a commit builder's branch (a force-push is a
// new head), each new tag of a tag builder that matches its tag_pattern.
// A new tag builder builds only its newest matching tag(s)
// (initial_tags, default 1); a deleted or moved tag is logged, never
// rebuilt silently.
//
// It runs in every API replica, but only the leader (internal/leader)
// polls, and its record of what it has seen is written under the leader's
// fencing token. Each builder is polled on its own interval (poll_interval,
// default Git.PollInterval), at most Concurrency remotes at once, each
// within Timeout; a remote that fails is retried with backoff and its
// error is shown on the builder. Webhooks ask for an immediate poll with
// PollNow.
//
// A round lists each remote once: builders that share a remote URL and a
// credential (never across credentials; the outbound policy is the
// poller's one) poll at the same instants, a slot of the interval chosen
// by the remote, and the builders due together share one listing. The
// slots of different remotes spread evenly over the interval, so a round
// is a steady trickle, not a burst.
//
// Builds are queued through queue.Enqueuer.Enqueue with registry.ReuseUnlessFailed,
// so a poll, a webhook and a manual run of one commit build it once.
package poller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/leader"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/redis/go-redis/v9"
)

// Redis keys of the poller.
const (
	keySched   = "pkgfleet:poll:schedule" // hash builder key → schedule JSON (small: read every tick)
	keySeen    = "pkgfleet:poll:seen"     // hash builder key → seen JSON (head, tags: read per poll)
	keyPollNow = "pkgfleet:poll:now"      // set of builder keys a webhook wants polled
	keyLease   = "pkgfleet:poll:leader"
)

// Poller polls remotes while this process leads.
type Poller struct {
	Registry *registry.Registry
	Enqueuer *queue.Enqueuer
	Git      *git.Client
	// GitFor, when set, returns the git client for a builder (with its
	// credential) and a cleanup; otherwise Git is used.
	GitFor func(ctx context.Context, b *registry.Builder) (*git.Client, func(), error)
	Redis  redis.UniversalClient
	Log    *slog.Logger
	Owner  string // this replica's name, for the lease

	Interval    time.Duration // default poll interval (Git.PollInterval)
	Concurrency int           // remotes polled at once (Git.PollConcurrency)
	Timeout     time.Duration // per poll (Git.PollTimeout)
	// Tick is how often the leader looks for due builders and webhook
	// requests (default 1s).
	Tick time.Duration
	// Lease adjusts the leader election (tests use short leases).
	Lease func(*leader.Elector)
	// Observe, when set, is told the outcome ("ok", "error") and the
	// duration of each poll (metrics).
	Observe func(outcome string, d time.Duration)

	// polled, when set (tests), is told that a builder's poll has ended
	// and the builder is no longer in flight.
	polled func(key string)
	// listEach lists each builder's remote on its own, as before remotes
	// were shared (the benchmark's before).
	listEach bool
}

// state is what the poller remembers of one builder: its schedule
// (stored under keySched) and what it has seen (under keySeen).
type state struct {
	schedule
	Head string            `json:"head,omitempty"`
	Tags map[string]string `json:"tags,omitempty"` // matching tag → commit sha
}

type schedule struct {
	Fingerprint string     `json:"fingerprint"` // what was polled: a change starts afresh
	LastPollAt  *time.Time `json:"last_poll_at,omitempty"`
	NextPollAt  time.Time  `json:"next_poll_at"`
	LastError   string     `json:"last_error,omitempty"`
	Failures    int        `json:"failures,omitempty"`
}

type seen struct {
	Fingerprint string            `json:"fingerprint"`
	Head        string            `json:"head,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
}

// fingerprint changes when a builder's remote or what it follows does; the
// poller then treats it as new (builds its head or newest tags only).
func fingerprint(b *registry.Builder) string {
	return fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%s", b.URL, b.Branch, b.BuildTrigger, b.TagPattern, b.CreatedAt.Format(time.RFC3339Nano))
}

// Status is the poller's view of a builder, for the API.
type Status struct {
	LastPollAt *time.Time
	NextPollAt *time.Time
	LastError  string
}

// Statuses returns the poller's view of the builders named by key
// ("source/name"), or of every builder it has polled when none is named.
func Statuses(ctx context.Context, rdb redis.UniversalClient, keys ...string) (map[string]Status, error) {
	raw := map[string]string{}
	if len(keys) == 0 {
		all, err := rdb.HGetAll(ctx, keySched).Result()
		if err != nil {
			return nil, fmt.Errorf("poll status: %w", err)
		}
		raw = all
	} else {
		vals, err := rdb.HMGet(ctx, keySched, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("poll status: %w", err)
		}
		for i, v := range vals {
			if v, ok := v.(string); ok {
				raw[keys[i]] = v
			}
		}
	}
	out := make(map[string]Status, len(raw))
	for k, v := range raw {
		var st schedule
		if json.Unmarshal([]byte(v), &st) != nil {
			continue
		}
		next := st.NextPollAt
		out[k] = Status{LastPollAt: st.LastPollAt, NextPollAt: &next, LastError: st.LastError}
	}
	return out, nil
}

// PollNow asks the active poller to poll these builders ("source/name")
// at its next tick, with trigger "webhook".
func PollNow(ctx context.Context, rdb redis.UniversalClient, builders ...string) error {
	if len(builders) == 0 {
		return nil
	}
	members := make([]any, len(builders))
	for i, b := range builders {
		members[i] = b
	}
	return rdb.SAdd(ctx, keyPollNow, members...).Err()
}

// Run takes part in the election and polls while leading, until ctx ends.
func (p *Poller) Run(ctx context.Context) error {
	e := leader.New(p.Redis, keyLease, p.Owner, p.Log)
	if p.Lease != nil {
		p.Lease(e)
	}
	return e.Run(ctx, p.lead)
}

func (p *Poller) tick() time.Duration {
	if p.Tick > 0 {
		return p.Tick
	}
	return time.Second
}

// lead polls due builders until the term ends.
func (p *Poller) lead(ctx context.Context, term *leader.Term) {
	p.Log.Info("poller active", "token", term.Token, "interval", p.Interval, "concurrency", p.Concurrency)
	slots := make(chan struct{}, max(p.Concurrency, 1))
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	inFlight := map[string]bool{}
	t := time.NewTicker(p.tick())
	defer t.Stop()
	rec := p.newRecords()
	for {
		// A builder in flight when due reads the poll state is never due:
		// its poll may save between that read and the check below, and a
		// poll started from the state read before would count a failure
		// twice, log it twice and miscompute the backoff. A poll saves
		// before it leaves inFlight, so a builder not in flight now has
		// its latest state in Redis.
		mu.Lock()
		wasBusy := maps.Clone(inFlight)
		mu.Unlock()
		due, err := p.due(ctx, rec)
		if err != nil && ctx.Err() == nil {
			p.Log.Warn("poller: cannot list builders", "error", err)
		}
		groups := map[string][]dueBuilder{}
		var remotes []string
		for _, d := range due {
			key := d.builder.Key()
			mu.Lock()
			busy := wasBusy[key] || inFlight[key]
			if !busy {
				inFlight[key] = true
			}
			mu.Unlock()
			if busy {
				// due took the webhook's request; it must outlive the poll
				// in flight, which may have listed the remote before the push.
				if d.trigger == "webhook" {
					if err := PollNow(ctx, p.Redis, key); err != nil && ctx.Err() == nil {
						p.Log.Warn("poller: a webhook's poll request could not be kept", "builder", key, "error", err)
					}
				}
				continue
			}
			r := p.remote(d.builder)
			if groups[r] == nil {
				remotes = append(remotes, r)
			}
			groups[r] = append(groups[r], d)
		}
		for _, r := range remotes {
			group := groups[r]
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				p.pollRemote(ctx, term, r, group)
				for _, d := range group {
					key := d.builder.Key()
					mu.Lock()
					delete(inFlight, key)
					mu.Unlock()
					if p.polled != nil {
						p.polled(key)
					}
				}
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type dueBuilder struct {
	builder *registry.Builder
	state   *state // nil: never polled
	trigger string // "poll" or "webhook"
}

// records keeps, across one term's ticks, the builders and schedules
// due decoded: with 10,000 builders, decoding every record each tick
// was most of the poller's CPU.
type records struct {
	builders *registry.BuilderCache
	scheds   map[string]cachedSchedule // by builder key
}

type cachedSchedule struct {
	raw         string // as stored
	sched       schedule
	builder     *registry.Builder // whose fingerprint is fingerprint
	fingerprint string
}

func (p *Poller) newRecords() *records {
	return &records{builders: p.Registry.NewBuilderCache(), scheds: map[string]cachedSchedule{}}
}

// due lists the builders to poll now, and forgets builders that are gone.
func (p *Poller) due(ctx context.Context, rec *records) ([]dueBuilder, error) {
	builders, err := rec.builders.Builders(ctx)
	if err != nil {
		return nil, err
	}
	raw, err := p.Redis.HGetAll(ctx, keySched).Result()
	if err != nil {
		return nil, err
	}
	now, err := p.Redis.SMembers(ctx, keyPollNow).Result()
	if err != nil {
		return nil, err
	}
	if len(now) > 0 {
		members := make([]any, len(now))
		for i, k := range now {
			members[i] = k
		}
		p.Redis.SRem(ctx, keyPollNow, members...)
	}
	var out []dueBuilder
	seen := map[string]bool{}
	scheds := make(map[string]cachedSchedule, len(raw))
	// One instant for the whole list: builders of one remote, which share
	// a slot, are all due or all not.
	at := time.Now()
	for _, b := range builders {
		key := b.Key()
		seen[key] = true
		d := dueBuilder{builder: b, trigger: "poll"}
		if v, ok := raw[key]; ok {
			c, decoded := rec.scheds[key]
			if decoded && c.raw != v {
				decoded = false
			}
			if !decoded {
				c = cachedSchedule{raw: v}
				decoded = json.Unmarshal([]byte(v), &c.sched) == nil
			}
			if c.builder != b { // the BuilderCache's: the same while the record is
				c.builder, c.fingerprint = b, fingerprint(b)
			}
			if decoded {
				scheds[key] = c
				if c.sched.Fingerprint == c.fingerprint {
					d.state = &state{schedule: c.sched}
				}
			}
		}
		switch {
		case slices.Contains(now, key):
			d.trigger = "webhook"
		case d.state == nil, !at.Before(d.state.NextPollAt):
		default:
			continue
		}
		out = append(out, d)
	}
	rec.scheds = scheds
	for key := range raw {
		if !seen[key] {
			p.Redis.HDel(ctx, keySched, key)
			p.Redis.HDel(ctx, keySeen, key)
		}
	}
	return out, nil
}

// remote is what one listing may serve: builders of one URL with one
// credential. The outbound policy is the poller's for every builder.
func (p *Poller) remote(b *registry.Builder) string {
	if p.listEach {
		return b.Key()
	}
	return b.URL + "\x00" + b.Credential
}

// pollRemote lists one remote once for the builders of group, all of that
// remote, and queues what is new for each.
func (p *Poller) pollRemote(ctx context.Context, term *leader.Term, remote string, group []dueBuilder) {
	started := time.Now()
	pctx, cancel := context.WithTimeout(ctx, p.Timeout)
	refs, err := p.lsRemote(pctx, group[0].builder) // one credential: the group's
	cancel()
	if ctx.Err() != nil {
		return // the term ended: leave the state to the next leader
	}
	listed := listing{remote: remote, refs: refs, err: err, took: time.Since(started), at: time.Now().UTC()}
	for _, d := range group {
		p.poll(ctx, term, d, listed)
	}
}

// listing is one remote's listing, shared by the builders polled with it.
type listing struct {
	remote string
	refs   *git.Refs
	err    error
	took   time.Duration
	at     time.Time
}

// poll queues what is new for one builder in its remote's listing.
func (p *Poller) poll(ctx context.Context, term *leader.Term, d dueBuilder, l listing) {
	b := d.builder
	log := p.Log.With("source", b.Source, "builder", b.Name)
	st := d.state
	first := st == nil
	if !first {
		var sn seen
		raw, err := p.Redis.HGet(ctx, keySeen, b.Key()).Bytes()
		if err != nil && !errors.Is(err, redis.Nil) {
			log.Warn("poll: cannot read what was seen", "error", err)
			return
		}
		if json.Unmarshal(raw, &sn) != nil || sn.Fingerprint != st.Fingerprint {
			first = true
		}
		st.Head, st.Tags = sn.Head, sn.Tags
	}
	if first {
		st = &state{schedule: schedule{Fingerprint: fingerprint(b)}}
	}
	interval := p.Interval
	if b.PollInterval > 0 {
		interval = time.Duration(b.PollInterval)
	}
	now := l.at
	st.LastPollAt = &now
	err := l.err
	if err == nil {
		err = p.queueNew(ctx, log, b, st, first, l.refs, d.trigger)
	}
	if p.Observe != nil {
		outcome := "ok"
		if err != nil {
			outcome = "error"
		}
		p.Observe(outcome, l.took)
	}
	// A remote is logged when it starts failing and when it recovers, not
	// at each poll between: a fleet of failing builders (or one created
	// to fail) must not fill the log. The builder's last_error and
	// pkgfleet_polls_total{outcome="error"} show the rest.
	wasFailing := st.Failures > 0
	if err != nil {
		st.Failures++
		st.LastError = git.Explain(err) // shown to API clients: never git's own text
		// Within ±10% of the backoff, at the remote's own place there: the
		// builders that failed together retry together, on one listing.
		wait := backoff(st.Failures, interval)
		st.NextPollAt = slot(l.remote, now.Add(wait-wait/10), wait/5)
		level := slog.LevelWarn
		if wasFailing {
			level = slog.LevelDebug
		}
		log.Log(ctx, level, "poll failed", "error", err, "failures", st.Failures, "next_poll_at", st.NextPollAt)
	} else {
		if wasFailing {
			log.Info("poll succeeds again", "failures", st.Failures)
		}
		st.Failures, st.LastError = 0, ""
		// The remote's slot at least half an interval away: the first poll
		// moves onto it, every later one is a whole interval apart.
		st.NextPollAt = slot(l.remote, now.Add(interval/2), interval)
	}
	if err := p.save(ctx, term, b.Key(), st); err != nil && ctx.Err() == nil {
		log.Warn("poll state not saved", "error", err)
	}
}

func (p *Poller) lsRemote(ctx context.Context, b *registry.Builder) (*git.Refs, error) {
	gc, done := p.Git, func() {}
	if p.GitFor != nil {
		var err error
		if gc, done, err = p.GitFor(ctx, b); err != nil {
			return nil, err
		}
	}
	defer done()
	return gc.LsRemote(ctx, b.URL)
}

// queueNew compares refs with what was seen and queues builds of what is
// new; st records only what was queued, so a failed enqueue is retried at
// the next poll.
func (p *Poller) queueNew(ctx context.Context, log *slog.Logger, b *registry.Builder, st *state, first bool, refs *git.Refs, trigger string) error {
	if b.BuildTrigger != registry.TriggerTags {
		branch, sha, err := queue.Latest(b, refs)
		if err != nil {
			return err
		}
		if sha == st.Head {
			return nil
		}
		if err := p.enqueue(ctx, b, branch, sha, trigger); err != nil {
			return err
		}
		st.Head = sha
		return nil
	}

	matching, err := refs.MatchingTags(b.TagPattern) // newest first
	if err != nil {
		return err
	}
	var build []string
	if first {
		n := 1
		if b.InitialTags != nil {
			n = *b.InitialTags
		}
		build = matching[:min(n, len(matching))]
		st.Tags = map[string]string{}
		for _, tag := range matching[min(n, len(matching)):] {
			st.Tags[tag] = refs.Tags[tag] // older tags: seen, not built
		}
	} else {
		current := map[string]bool{}
		for _, tag := range matching {
			current[tag] = true
			seen, ok := st.Tags[tag]
			switch {
			case !ok:
				build = append(build, tag)
			case seen != refs.Tags[tag]:
				log.Warn("tag moved; not rebuilt (rerun it to build the new commit)", "tag", tag, "was", seen, "now", refs.Tags[tag])
				st.Tags[tag] = refs.Tags[tag]
			}
		}
		for tag := range st.Tags {
			if !current[tag] {
				log.Warn("tag deleted on the remote; its builds are kept", "tag", tag, "was", st.Tags[tag])
				delete(st.Tags, tag)
			}
		}
	}
	if st.Tags == nil {
		st.Tags = map[string]string{}
	}
	var errs []error
	for _, tag := range slices.Backward(build) { // oldest first: lower build ids
		if err := p.enqueue(ctx, b, tag, refs.Tags[tag], trigger); err != nil {
			errs = append(errs, err)
			continue
		}
		st.Tags[tag] = refs.Tags[tag]
	}
	return errors.Join(errs...)
}

func (p *Poller) enqueue(ctx context.Context, b *registry.Builder, ref, sha, trigger string) error {
	// p.Log, not the builder's logger: Enqueue names the builder itself.
	_, _, err := p.Enqueuer.Enqueue(ctx, p.Log, queue.Request{Builder: b, Ref: ref, SHA: sha, Trigger: trigger, Mode: registry.ReuseUnlessFailed})
	if err != nil {
		return fmt.Errorf("queue build of %s (%s): %w", ref, sha, err)
	}
	return nil
}

// save writes st only while term still holds the poller lease.
var saveScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
return 1
`)

func (p *Poller) save(ctx context.Context, term *leader.Term, key string, st *state) error {
	sched, _ := json.Marshal(st.schedule)
	sn, _ := json.Marshal(seen{Fingerprint: st.Fingerprint, Head: st.Head, Tags: st.Tags})
	lease, value := term.Fence()
	ok, err := saveScript.Run(context.WithoutCancel(ctx), p.Redis, []string{lease, keySched, keySeen}, value, key, sched, sn).Int()
	if err != nil {
		return err
	}
	if ok == 0 {
		return errors.New("no longer the active poller")
	}
	return nil
}

// backoff is the wait after n failures in a row: 30s doubling, at most
// max(interval, 1h).
func backoff(n int, interval time.Duration) time.Duration {
	d := 30 * time.Second << min(n-1, 10)
	return min(d, max(interval, time.Hour))
}

// slot is the first instant from after on that falls at remote's place
// in a period: a place fixed by the remote (a hash of it), so that
// different remotes spread evenly over the period and one remote's
// builders meet.
func slot(remote string, after time.Time, period time.Duration) time.Time {
	if period <= 0 {
		return after
	}
	h := fnv.New64a()
	h.Write([]byte(remote))
	phase := int64(h.Sum64() % uint64(period))
	off := (after.UnixNano() - phase) % int64(period)
	if off < 0 {
		off += int64(period)
	}
	if off == 0 {
		return after
	}
	return after.Add(period - time.Duration(off))
}
