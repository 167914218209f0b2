package poller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/leader"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) {
	if root := os.Getenv(gitServerEnv); root != "" {
		serveGit(root) // the load test's server process
	}
	os.Exit(testenv.MainWithRedis(m, &redisServer))
}

type env struct {
	t   *testing.T
	db  int
	rdb *redis.Client
	reg *registry.Registry
}

func setup(t *testing.T) *env {
	t.Helper()
	testenv.Require(t, "git")
	rdb, db := redisServer.DB(t)
	reg := registry.New(rdb)
	if _, err := reg.CreateSource(context.Background(), registry.Source{Name: "src", Type: registry.TypeGit}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, db: db, rdb: rdb, reg: reg}
}

// poller returns a fast poller with its own Redis connection (as another
// API replica has) on e's database, and that connection.
func (e *env) poller(owner string) (*Poller, *redis.Client) {
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: redisServer.Socket, DB: e.db})
	e.t.Cleanup(func() { rdb.Close() })
	reg := registry.New(rdb)
	enq := &queue.Enqueuer{
		Registry: reg, Client: asynq.NewClientFromRedisClient(rdb), Inspector: asynq.NewInspectorFromRedisClient(rdb),
		Timeout: time.Hour, MaxAttempts: 1, Redis: rdb,
	}
	return &Poller{
		Registry: reg, Enqueuer: enq, Git: &git.Client{Policy: git.URLPolicy{AllowFile: true}},
		Redis: rdb, Log: testenv.Logger(e.t).With("owner", owner), Owner: owner,
		Interval: 100 * time.Millisecond, Concurrency: 2, Timeout: 10 * time.Second, Tick: 20 * time.Millisecond,
		Lease: func(el *leader.Elector) {
			el.TTL, el.RenewEvery, el.RetryEvery = time.Second, 200*time.Millisecond, 100*time.Millisecond
		},
	}, rdb
}

func (e *env) start(p *Poller, _ *redis.Client) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return stop
}

func (e *env) builder(b registry.Builder) *registry.Builder {
	e.t.Helper()
	b.Source = "src"
	if err := (registry.Policy{URLs: git.URLPolicy{AllowFile: true}}).ValidateBuilder(&b); err != nil {
		e.t.Fatal(err)
	}
	if err := e.reg.CreateBuilder(context.Background(), &b); err != nil {
		e.t.Fatal(err)
	}
	return &b
}

// refs lists "ref@sha" of the builder's builds, oldest first.
func (e *env) builds(name string) []string {
	e.t.Helper()
	list, err := e.reg.Builds(context.Background(), registry.Filter{Source: "src", Builder: name})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for i := len(list) - 1; i >= 0; i-- {
		out = append(out, list[i].Ref+"@"+list[i].SHA[:7]+"/"+list[i].Trigger)
	}
	return out
}

// polls waits until the builder has been polled n more times.
func (e *env) polls(key string, n int) {
	e.t.Helper()
	count, last := 0, ""
	testenv.Eventually(e.t, 20*time.Second, fmt.Sprintf("%d polls of %s", n, key), func() bool {
		st, _ := Statuses(context.Background(), e.rdb)
		if s, ok := st[key]; ok && s.LastPollAt != nil && s.LastPollAt.String() != last {
			last = s.LastPollAt.String()
			count++
		}
		return count > n
	})
}

func short(sha string) string { return sha[:7] }

func TestPollerBuildsEachNewHeadOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo, first := testenv.Repo(t, map[string]string{"f": "1"})
	e.builder(registry.Builder{Name: "head", URL: "file://" + repo, Branch: "main"})
	e.start(e.poller("a"))

	testenv.Eventually(t, 20*time.Second, "the head to be built", func() bool { return len(e.builds("head")) == 1 })
	e.polls("src/head", 3)
	second := testenv.Commit(t, repo, map[string]string{"f": "2"}, "two")
	testenv.Eventually(t, 20*time.Second, "the new head to be built", func() bool { return len(e.builds("head")) == 2 })
	// A force-push to a new commit is a new head too.
	testenv.Git(t, repo, "reset", "--hard", first)
	forced := testenv.Commit(t, repo, map[string]string{"f": "3"}, "rewritten")
	testenv.Eventually(t, 20*time.Second, "the force-pushed head to be built", func() bool { return len(e.builds("head")) == 3 })
	e.polls("src/head", 3)
	want := []string{"main@" + short(first) + "/poll", "main@" + short(second) + "/poll", "main@" + short(forced) + "/poll"}
	if got := e.builds("head"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("builds %v, want %v (each head once)", got, want)
	}
}

func TestTagBuilderBuildsNewestTagAtCreationThenEachNewMatchingTag(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo, _ := testenv.Repo(t, map[string]string{"f": "0"})
	sha := map[string]string{}
	for _, tag := range []string{"v1.0", "v1.9", "v1.10", "other-2.0"} {
		sha[tag] = testenv.Commit(t, repo, map[string]string{"f": tag}, tag)
		testenv.Git(t, repo, "tag", tag)
	}
	e.builder(registry.Builder{Name: "tags", URL: "file://" + repo, BuildTrigger: registry.TriggerTags, TagPattern: "v*"})
	e.start(e.poller("a"))
	testenv.Eventually(t, 20*time.Second, "the newest tag to be built", func() bool { return len(e.builds("tags")) >= 1 })
	e.polls("src/tags", 2)
	if got := e.builds("tags"); fmt.Sprint(got) != fmt.Sprint([]string{"v1.10@" + short(sha["v1.10"]) + "/poll"}) {
		t.Fatalf("at creation built %v, want only the newest matching tag v1.10", got)
	}

	// A new matching tag is built; a non-matching one is not; a moved
	// and a deleted tag are logged, not rebuilt.
	sha["v2.0"] = testenv.Commit(t, repo, map[string]string{"f": "2"}, "two")
	testenv.Git(t, repo, "tag", "v2.0")
	testenv.Git(t, repo, "tag", "rc-3")
	testenv.Git(t, repo, "tag", "-f", "v1.0")
	testenv.Git(t, repo, "tag", "-d", "v1.9")
	testenv.Eventually(t, 20*time.Second, "the new tag to be built", func() bool { return len(e.builds("tags")) >= 2 })
	e.polls("src/tags", 3)
	want := []string{"v1.10@" + short(sha["v1.10"]) + "/poll", "v2.0@" + short(sha["v2.0"]) + "/poll"}
	if got := e.builds("tags"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("builds %v, want %v", got, want)
	}
}

func TestInitialTagsBuildsThatManyNewestTags(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo, _ := testenv.Repo(t, map[string]string{"f": "0"})
	for _, tag := range []string{"1.0", "1.1", "1.2", "2.0"} {
		testenv.Commit(t, repo, map[string]string{"f": tag}, tag)
		testenv.Git(t, repo, "tag", tag)
	}
	three := 3
	e.builder(registry.Builder{Name: "t", URL: "file://" + repo, BuildTrigger: registry.TriggerTags, InitialTags: &three})
	e.start(e.poller("a"))
	testenv.Eventually(t, 20*time.Second, "three builds", func() bool { return len(e.builds("t")) >= 3 })
	e.polls("src/t", 2)
	var refs []string
	for _, b := range e.builds("t") {
		refs = append(refs, strings.Split(b, "@")[0])
	}
	if fmt.Sprint(refs) != "[1.1 1.2 2.0]" {
		t.Fatalf("built %v, want the three newest tags, oldest first", refs)
	}
}

func TestUnreachableRemoteBacksOffAndShowsItsError(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.builder(registry.Builder{Name: "gone", URL: "file:///nonexistent/repo"})
	e.start(e.poller("a"))
	var st Status
	testenv.Eventually(t, 20*time.Second, "a failed poll", func() bool {
		all, _ := Statuses(context.Background(), e.rdb)
		st = all["src/gone"]
		return st.LastError != ""
	})
	// The problem, in pkgfleet's words: git's own text is for the log.
	if st.LastError != "the remote has no such repository" {
		t.Fatalf("last error %q does not name the problem in pkgfleet's words", st.LastError)
	}
	// The interval is 100ms; the retry after a failure waits ~30s.
	if wait := st.NextPollAt.Sub(*st.LastPollAt); wait < 25*time.Second {
		t.Fatalf("next poll after a failure in %s, want a backoff of about 30s", wait)
	}
	if n := len(e.builds("gone")); n != 0 {
		t.Fatalf("%d builds of an unreachable remote", n)
	}
}

func TestWebhookRequestIsPolledAtOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo, _ := testenv.Repo(t, map[string]string{"f": "1"})
	b := e.builder(registry.Builder{Name: "hooked", URL: "file://" + repo, PollInterval: registry.Duration(time.Hour)})
	e.start(e.poller("a"))
	testenv.Eventually(t, 2*time.Minute, "the first build", func() bool { return len(e.builds("hooked")) == 1 })
	sha := testenv.Commit(t, repo, map[string]string{"f": "2"}, "two")
	if err := PollNow(context.Background(), e.rdb, b.Key()); err != nil {
		t.Fatal(err)
	}
	// Any deadline well short of the hour proves the poll came from the
	// webhook; a loaded CI machine needs more than a few seconds.
	testenv.Eventually(t, 2*time.Minute, "the pushed commit to be built before the hour is up", func() bool {
		got := e.builds("hooked")
		return len(got) == 2 && got[1] == "main@"+short(sha)+"/webhook"
	})
}

func TestOnlyOnePollerIsActiveAndASurvivorTakesOver(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo, _ := testenv.Repo(t, map[string]string{"f": "1"})
	e.builder(registry.Builder{Name: "h", URL: "file://" + repo})
	pa, rdbA := e.poller("a")
	e.start(pa, rdbA)
	testenv.Eventually(t, 10*time.Second, "a to lead", func() bool {
		v := e.rdb.Get(context.Background(), keyLease).Val()
		return strings.HasSuffix(v, ":a")
	})
	e.start(e.poller("b"))
	testenv.Eventually(t, 20*time.Second, "the head to be built", func() bool { return len(e.builds("h")) == 1 })
	e.polls("src/h", 5)
	if v := e.rdb.Get(context.Background(), keyLease).Val(); !strings.HasSuffix(v, ":a") {
		t.Fatalf("leadership moved to %q while a was alive", v)
	}

	// a crashes (or is cut off from Redis): it can neither renew nor give
	// its lease up.
	rdbA.Close()
	crashed := time.Now()
	testenv.Eventually(t, 10*time.Second, "b to take over", func() bool {
		v := e.rdb.Get(context.Background(), keyLease).Val()
		return strings.HasSuffix(v, ":b")
	})
	took := time.Since(crashed)
	t.Logf("b took over %s after a crashed (lease 1s, retry 100ms)", took.Round(time.Millisecond))
	if took > 2500*time.Millisecond {
		t.Fatalf("takeover took %s, want about the 1s lease (plus a retry)", took)
	}
	sha := testenv.Commit(t, repo, map[string]string{"f": "2"}, "two")
	testenv.Eventually(t, 20*time.Second, "b to build the new head", func() bool {
		got := e.builds("h")
		return len(got) == 2 && strings.Contains(got[1], short(sha))
	})
	e.polls("src/h", 3)
	if n := len(e.builds("h")); n != 2 {
		t.Fatalf("%d builds after failover, want 2 (nothing queued twice)", n)
	}
}

func TestStaleLeaderCannotOverwritePollState(t *testing.T) {
	t.Parallel()
	e := setup(t)
	old := &leader.Term{}
	// Another replica holds the lease; a write under a stale term fails.
	e.rdb.Set(context.Background(), keyLease, "7:b", time.Minute)
	p, _ := e.poller("a")
	if err := p.save(context.Background(), old, "src/x", &state{}); err == nil {
		t.Fatal("a stale leader wrote poll state")
	}
	if n := e.rdb.HLen(context.Background(), keySched).Val(); n != 0 {
		t.Fatalf("%d states written", n)
	}
}

// A remote's slot is within one period of the time asked, the same for
// every builder of the remote, and the slots of many remotes fill the
// period evenly: a round is no burst.
func TestSlotsSpreadRemotesOverTheIntervalAndGatherEachRemotesBuilders(t *testing.T) {
	t.Parallel()
	const period = time.Minute
	after := time.Date(2026, 12, 7, 3, 0, 0, 123, time.UTC)
	tenths := make([]int, 10)
	for i := range 1000 {
		r := fmt.Sprintf("https://git.example.com/r%d.git\x00", i)
		s := slot(r, after, period)
		if s.Before(after) || !s.Before(after.Add(period)) {
			t.Fatalf("slot %s not within a period of %s", s, after)
		}
		if again := slot(r, after.Add(17*time.Second), period); again != s && again != s.Add(period) {
			t.Fatalf("the remote's slot moved: %s, then %s", s, again)
		}
		tenths[int(s.Sub(after)/(period/10))]++
	}
	for i, n := range tenths {
		if n < 70 || n > 130 { // 100 each when even
			t.Fatalf("tenth %d of the period holds %d of 1000 remotes' slots: %v", i, n, tenths)
		}
	}
	got := []time.Duration{backoff(1, 5*time.Minute), backoff(2, 5*time.Minute), backoff(20, 5*time.Minute)}
	want := []time.Duration{30 * time.Second, time.Minute, time.Hour}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("backoff = %v, want %v", got, want)
	}
}

func TestPollerUsesTheBuildersGitClient(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo, _ := testenv.Repo(t, map[string]string{"f": "1"})
	e.builder(registry.Builder{Name: "private", URL: "file://" + repo, Credential: "deploy-key"})
	p, _ := e.poller("a")
	asked := make(chan string, 10)
	p.GitFor = func(ctx context.Context, b *registry.Builder) (*git.Client, func(), error) {
		asked <- b.Credential
		return p.Git, func() {}, nil
	}
	e.start(p, nil)
	testenv.Eventually(t, 20*time.Second, "the head to be built", func() bool { return len(e.builds("private")) == 1 })
	if cred := <-asked; cred != "deploy-key" {
		t.Fatalf("git client asked for credential %q", cred)
	}
}

func TestRepeatedPollFailuresAreLoggedOncePerStateChange(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo, _ := testenv.Repo(t, map[string]string{"f": "1"})
	away := repo + ".away"
	move := func(from, to string) {
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	move(repo, away) // failing from the start
	// Polled only on demand (the first poll, then PollNow): a scheduled
	// poll racing a requested one could start from the state read before
	// the other saved, and count a failure twice.
	b := e.builder(registry.Builder{Name: "flaky", URL: "file://" + repo, PollInterval: registry.Duration(time.Hour)})
	p, rdb := e.poller("a")
	log, captured := testenv.CapturingLogger(t)
	p.Log = log
	e.start(p, rdb)
	poll := func() {
		t.Helper()
		if err := PollNow(context.Background(), e.rdb, b.Key()); err != nil {
			t.Fatal(err)
		}
		e.polls(b.Key(), 1)
	}
	// count returns the warnings and the recoveries logged so far.
	count := func() (warn, info int) {
		out := captured.String()
		return strings.Count(out, `level=WARN msg="poll failed"`), strings.Count(out, `level=INFO msg="poll succeeds again"`)
	}
	e.polls(b.Key(), 0)
	for range 3 {
		poll()
	}
	if w, i := count(); w != 1 || i != 0 {
		t.Fatalf("4 failed polls logged %d warnings and %d recoveries, want 1 and 0:\n%s", w, i, captured)
	}
	move(away, repo)
	poll()
	poll()
	if w, i := count(); w != 1 || i != 1 {
		t.Fatalf("after the recovery: %d warnings and %d recoveries, want 1 and 1:\n%s", w, i, captured)
	}
	move(repo, away)
	poll()
	poll()
	if w, i := count(); w != 2 || i != 1 {
		t.Fatalf("failing again: %d warnings and %d recoveries, want 2 and 1:\n%s", w, i, captured)
	}
}

// tickHook calls onTick after each of the poll loop's reads of the poll
// schedule (one per tick), before due returns what it read.
type tickHook struct{ onTick func(ctx context.Context) }

func (h tickHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h tickHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if args := cmd.Args(); strings.EqualFold(cmd.Name(), "hgetall") && len(args) == 2 && args[1] == keySched {
			h.onTick(ctx)
		}
		return err
	}
}

func (h tickHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestAPollEndingWhileTheLoopReadsTheScheduleIsNotRepeatedFromStaleState(t *testing.T) {
	t.Parallel()
	e := setup(t)
	b := e.builder(registry.Builder{Name: "gone", URL: "file:///nonexistent/repo", PollInterval: registry.Duration(time.Hour)})
	p, rdb := e.poller("a")
	log, captured := testenv.CapturingLogger(t)
	p.Log = log

	// The first poll is held in flight until a tick has read the schedule;
	// then it fails, saves and leaves flight before that tick goes on.
	var mu sync.Mutex
	calls := 0
	held, release, ended := make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
	p.GitFor = func(ctx context.Context, _ *registry.Builder) (*git.Client, func(), error) {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			close(held)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return p.Git, func() {}, nil
	}
	p.polled = func(string) {
		select {
		case ended <- struct{}{}:
		default:
		}
	}
	ticksAfter := 0 // ticks after the one that read the schedule mid-poll
	raced := false
	rdb.AddHook(tickHook{onTick: func(ctx context.Context) {
		select {
		case <-held:
		default:
			return // the first poll has not started
		}
		mu.Lock()
		defer mu.Unlock()
		if raced {
			ticksAfter++
			return
		}
		raced = true
		close(release)
		select {
		case <-ended:
		case <-time.After(20 * time.Second):
			t.Error("the held poll did not end")
		case <-ctx.Done():
		}
	}})
	e.start(p, rdb)

	testenv.Eventually(t, 20*time.Second, "three ticks after the poll ended", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ticksAfter >= 3
	})
	mu.Lock()
	n := calls
	mu.Unlock()
	// The failed poll set a backoff of ~30s: nothing is due in these ticks.
	if n != 1 {
		t.Fatalf("the remote was listed %d times, want 1: a poll started from the state read before the last one saved", n)
	}
	if w := strings.Count(captured.String(), `level=WARN msg="poll failed"`); w != 1 {
		t.Fatalf("%d warnings for one failing remote, want 1:\n%s", w, captured)
	}
	if st, _ := Statuses(context.Background(), e.rdb, b.Key()); st[b.Key()].LastError == "" {
		t.Fatal("the failed poll's state was not saved")
	}
}

// Builders of one remote and one credential are listed once for all of
// them each round; builders of the same URL with another credential are
// never served that listing (nor it theirs): a credential that fails
// fails its own builders only.
func TestBuildersSharingARemoteAndCredentialShareOneListing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo, _ := testenv.Repo(t, map[string]string{"f": "1"})
	for i := range 5 {
		e.builder(registry.Builder{Name: fmt.Sprintf("open%d", i), URL: "file://" + repo, BuildTrigger: registry.TriggerTags, TagPattern: "never-*"})
	}
	for i := range 2 {
		e.builder(registry.Builder{Name: fmt.Sprintf("locked%d", i), URL: "file://" + repo, Credential: "revoked", BuildTrigger: registry.TriggerTags, TagPattern: "never-*"})
	}
	p, rdb := e.poller("a")
	var mu sync.Mutex
	listings, polls := map[string]int{}, map[string]int{}
	p.GitFor = func(ctx context.Context, b *registry.Builder) (*git.Client, func(), error) {
		mu.Lock()
		listings[b.Credential]++
		mu.Unlock()
		if b.Credential == "revoked" {
			return nil, nil, errors.New("credential revoked")
		}
		return p.Git, func() {}, nil
	}
	p.polled = func(key string) {
		mu.Lock()
		polls[key]++
		mu.Unlock()
	}
	e.start(p, rdb)
	testenv.Eventually(t, 20*time.Second, "the open builders polled 5 times, the locked ones once (then backing off)", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return polls["src/open0"] >= 5 && polls["src/open4"] >= 5 && polls["src/locked0"] >= 1 && polls["src/locked1"] >= 1
	})
	mu.Lock()
	openPolls, open := 0, listings[""]
	for k, n := range polls {
		if strings.HasPrefix(k, "src/open") {
			openPolls += n
		}
	}
	mu.Unlock()
	// One listing per round serves all five; a tick that catches a round
	// half done may list twice, never once per builder.
	if open*2 >= openPolls {
		t.Fatalf("%d listings of the shared remote for %d polls of its 5 builders", open, openPolls)
	}
	st, err := Statuses(context.Background(), e.rdb)
	if err != nil {
		t.Fatal(err)
	}
	for k, s := range st {
		if failing := s.LastError != ""; failing != strings.HasPrefix(k, "src/locked") {
			t.Errorf("%s: last error %q: a listing crossed credentials", k, s.LastError)
		}
	}
}
