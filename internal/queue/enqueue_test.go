package queue

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

// stopping is a built commit whose task a worker still holds active
// although its record is final, as the pipeline leaves it for a moment
// after its last record write (or longer, while a canceled sandbox goes).
type stopping struct {
	enq     *Enqueuer
	builder *registry.Builder
	first   *registry.Build
	release func()
}

func newStopping(t *testing.T, stopWait time.Duration) *stopping {
	t.Helper()
	ctx := context.Background()
	rdb, _ := redisServer.DB(t)
	reg := registry.New(rdb)
	if _, err := reg.CreateSource(ctx, registry.Source{Name: "src", Type: registry.TypeGit}); err != nil {
		t.Fatal(err)
	}
	b := &registry.Builder{Source: "src", Name: "pkg", URL: "https://h/x", Language: registry.LangR}
	if err := reg.CreateBuilder(ctx, b); err != nil {
		t.Fatal(err)
	}
	enq := &Enqueuer{Registry: reg, Client: asynq.NewClientFromRedisClient(rdb), Inspector: asynq.NewInspectorFromRedisClient(rdb),
		Timeout: time.Hour, MaxAttempts: 1, Redis: rdb, BuildConcurrency: 2, StopWait: stopWait}
	sha := "0123456789abcdef0123456789abcdef01234567"
	first, created, err := enq.Enqueue(ctx, testenv.Logger(t), Request{Builder: b, Ref: "main", SHA: sha, Trigger: "manual", Mode: registry.ReuseActive})
	if err != nil || !created {
		t.Fatalf("first build: created %v, %v", created, err)
	}
	taken, held := make(chan struct{}), make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{Queue(registry.LangR): 1}, Concurrency: 1, Logger: quiet{}})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		close(taken)
		<-held
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-taken:
	case <-time.After(20 * time.Second):
		t.Fatal("no worker took the first build's task")
	}
	if _, err := reg.UpdateBuild(ctx, first.ID, func(b *registry.Build) error {
		now := time.Now().UTC()
		b.Status, b.FinishedAt = registry.StatusSucceeded, &now
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var released bool
	release := func() {
		if !released {
			released = true
			close(held)
		}
	}
	t.Cleanup(func() { release(); srv.Shutdown() })
	return &stopping{enq: enq, builder: b, first: first, release: release}
}

func (s *stopping) rerun(t *testing.T) (*registry.Build, bool, error) {
	return s.enq.Enqueue(context.Background(), testenv.Logger(t), Request{Builder: s.builder, Ref: s.first.SHA, SHA: s.first.SHA, Trigger: "rerun", Mode: registry.ReuseActive})
}

func TestARerunRightAfterABuildFinishesWaitsForItsTaskAndIsQueued(t *testing.T) {
	t.Parallel()
	s := newStopping(t, 30*time.Second)
	type outcome struct {
		b       *registry.Build
		created bool
		err     error
	}
	done := make(chan outcome, 1)
	go func() { b, created, err := s.rerun(t); done <- outcome{b, created, err} }()
	// The worker lets go of the task only once the rerun has recorded its
	// build, so the rerun meets the active task.
	testenv.Eventually(t, 20*time.Second, "the rerun's record", func() bool {
		list, err := s.enq.Registry.Builds(context.Background(), registry.Filter{Source: "src", Builder: "pkg"})
		return err == nil && len(list) == 2
	})
	s.release()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the rerun never returned")
	}
	if o.err != nil || !o.created || o.b.ID == s.first.ID {
		t.Fatalf("rerun: build %+v, created %v, %v", o.b, o.created, o.err)
	}
	info, err := s.enq.Inspector.GetTaskInfo(Queue(registry.LangR), TaskID("src", "pkg", s.first.SHA))
	if err != nil {
		t.Fatalf("the rerun's task: %v", err)
	}
	if want := `{"build_id":` + strconv.FormatInt(o.b.ID, 10) + `}`; string(info.Payload) != want {
		t.Fatalf("queued task carries %s, want %s", info.Payload, want)
	}
	got, err := s.enq.Registry.Build(context.Background(), o.b.ID)
	if err != nil || registry.Terminal(got.Status) {
		t.Fatalf("the rerun's record: %+v, %v", got, err)
	}
}

func TestARerunWhoseEarlierTaskNeverEndsIsAClearErrorThatKeepsThatTask(t *testing.T) {
	t.Parallel()
	s := newStopping(t, 300*time.Millisecond)
	_, _, err := s.rerun(t)
	if !errors.Is(err, ErrStillStopping) {
		t.Fatalf("rerun while the earlier task stays active: %v, want ErrStillStopping", err)
	}
	info, ierr := s.enq.Inspector.GetTaskInfo(Queue(registry.LangR), TaskID("src", "pkg", s.first.SHA))
	if ierr != nil || info.State != asynq.TaskStateActive {
		t.Fatalf("the earlier build's task: %+v, %v; want it active, untouched", info, ierr)
	}
}

// quiet is an asynq logger that says nothing.
type quiet struct{}

func (quiet) Debug(...any) {}
func (quiet) Info(...any)  {}
func (quiet) Warn(...any)  {}
func (quiet) Error(...any) {}
func (quiet) Fatal(...any) {}
