package faulttest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/api"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/semaphore"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/pkgfleet/pkgfleet/internal/worker"
	"github.com/redis/go-redis/v9"
)

// roleEnv makes the test binary run as an API or worker process.
const (
	roleEnv = "PKGFLEET_FAULTTEST_ROLE"
	nameEnv = "PKGFLEET_FAULTTEST_NAME"
)

func TestMain(m *testing.M) {
	// Workers re-execute this binary for every sandbox.
	sandbox.Init()
	switch os.Getenv(roleEnv) {
	case "api", "worker":
		os.Exit(child(os.Getenv(roleEnv)))
	case "relay":
		os.Exit(relay(os.Getenv(relayListenEnv), os.Getenv(relayTargetEnv)))
	}
	code := m.Run()
	testenv.StopS3()
	os.Exit(code)
}

// child is a real API or worker process, configured from the environment
// as cmd/api and cmd/worker are; the worker uses short test intervals.
func child(role string) int {
	cfg, err := config.Load(config.Source{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := config.Logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if role == "api" {
		err = api.Run(ctx, cfg, log)
	} else {
		var w *worker.Worker
		w, err = worker.New(ctx, cfg, log, worker.Options{
			Name:                     os.Getenv(nameEnv),
			RetryDelay:               func(int) time.Duration { return 200 * time.Millisecond },
			TaskCheckInterval:        100 * time.Millisecond,
			DelayedTaskCheckInterval: 200 * time.Millisecond,
			HeartbeatEvery:           time.Second,
			// T and the slot's lease far below the defaults (20s, 60s),
			// so that the fencing tests take seconds, not minutes.
			FenceAfter:  4 * time.Second,
			ParkRecheck: 5 * time.Second,
			SweepEvery:  time.Second,
			Slots: func(s *semaphore.Semaphore) {
				s.HoldLease, s.CheckEvery = 6*time.Second, 500*time.Millisecond
			},
		})
		if err == nil {
			err = w.Run(ctx)
		}
	}
	if err != nil {
		log.Error(role+" stopped", "error", err)
		return 1
	}
	return 0
}

// fleet is a redis-server with AOF, and the API and worker processes the
// test starts on it.
type fleet struct {
	t      *testing.T
	dir    string
	env    map[string]string
	sock   string
	url    string
	redis  *exec.Cmd
	rdb    *redis.Client
	mu     sync.Mutex
	procs  map[string]*proc
	client *http.Client
}

type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func setup(t *testing.T, settings ...string) *fleet {
	t.Helper()
	testenv.Require(t, "git", "python3", "redis-server")
	dir := testenv.SharedDir(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := &fleet{t: t, dir: dir, sock: filepath.Join(dir, "redis", "redis.sock"), url: "http://" + addr,
		procs: map[string]*proc{}, client: &http.Client{Timeout: 5 * time.Second}}
	f.env = map[string]string{
		"PKGFLEET_SERVER_DATADIR":       filepath.Join(dir, "data"),
		"PKGFLEET_SERVER_TEMPDIR":       filepath.Join(dir, "tmp"),
		"PKGFLEET_SERVER_SOCKFILEDIR":   filepath.Join(dir, "run"),
		"PKGFLEET_GIT_ALLOWFILEURLS":    "true",
		"PKGFLEET_GIT_BUILDRETRIES":     "3",
		"PKGFLEET_GIT_BUILDTIMEOUT":     "2m",
		"PKGFLEET_REDIS_ADDRESS":        f.sock,
		"PKGFLEET_HTTP_LISTEN":          addr,
		"PKGFLEET_WORKER_CONCURRENCY":   "2",
		"PKGFLEET_WORKER_SHUTDOWNGRACE": "3s",
	}
	for i := 0; i+1 < len(settings); i += 2 {
		f.env[settings[i]] = settings[i+1]
	}
	for _, d := range []string{"data", "tmp", "run", "redis"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.rdb = redis.NewClient(&redis.Options{Network: "unix", Addr: f.sock, MaxRetries: -1})
	t.Cleanup(func() {
		f.rdb.Close()
		f.mu.Lock()
		procs := f.procs
		f.mu.Unlock()
		for name, p := range procs {
			p.cmd.Process.Kill()
			<-p.done
			if t.Failed() {
				out, _ := os.ReadFile(p.log)
				t.Logf("log of %s:\n%s", name, tail(string(out), 8000))
			}
		}
		f.stopRedis(syscall.SIGKILL)
	})
	return f
}

// startRedis starts (or restarts) redis-server on the same socket and
// directory, with AOF and an fsync per write, so a restart keeps every
// acknowledged write.
func (f *fleet) startRedis() {
	f.t.Helper()
	dir := filepath.Join(f.dir, "redis")
	cmd := exec.Command("redis-server", "--port", "0", "--unixsocket", f.sock, "--unixsocketperm", "700",
		"--dir", dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--maxmemory-policy", "noeviction")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(strings.ToLower(sc.Text()), "ready to accept connections") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		f.t.Fatal("redis-server did not start")
	}
	f.mu.Lock()
	f.redis = cmd
	f.mu.Unlock()
}

func (f *fleet) stopRedis(sig syscall.Signal) {
	f.mu.Lock()
	cmd := f.redis
	f.redis = nil
	f.mu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(sig)
		cmd.Wait()
	}
}

// start runs the test binary as an API or worker process named name;
// env (key, value pairs) overrides the fleet's settings for this process.
func (f *fleet) start(role, name string, env ...string) *proc {
	f.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role, nameEnv+"="+name)
	for k, v := range f.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, pairs(env)...)
	logPath := filepath.Join(f.dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		f.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	f.mu.Lock()
	f.procs[name] = p
	f.mu.Unlock()
	return p
}

// stop signals p and waits for it to exit.
func (p *proc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not exit after %s", p.log, sig)
	}
}

func (p *proc) logged(s string) bool {
	b, _ := os.ReadFile(p.log)
	return strings.Contains(string(b), s)
}

// do sends a request to the API; code 0 means it did not answer.
func (f *fleet) do(method, path string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.url+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (f *fleet) must(method, path string, body any, want int) []byte {
	f.t.Helper()
	code, out := f.do(method, path, body)
	if code != want {
		f.t.Fatalf("%s %s: %d, want %d: %s", method, path, code, want, out)
	}
	return out
}

// buildLog reads build id's log through the API: Redis's while the
// build runs, the artifact store's once it finished.
func (f *fleet) buildLog(id int64) string {
	f.t.Helper()
	return string(f.must("GET", fmt.Sprintf("/api/v1/builds/%d/log", id), nil, 200))
}

func (f *fleet) ready() bool { code, _ := f.do("GET", "/readyz", nil); return code == 200 }

// pkg is a setuptools package whose build runs `sleep secs` once (secs,
// marked by sleepArg, is also how the test finds that process).
func pkg(name, secs string) map[string]string {
	return map[string]string{
		"setup.py": fmt.Sprintf(`import os, subprocess
mark = os.path.join(os.environ["TMPDIR"], "slept")
if not os.path.exists(mark):
    open(mark, "w").close()
    subprocess.run(["sleep", %q], check=True)
from setuptools import setup
setup(name=%q, version="0.1.0", py_modules=[%q])
`, sleepArg(secs), name, name),
		name + ".py": "def hello():\n    return 'hello'\n",
	}
}

// builders creates source "py" and one builder per name, each building a
// package that sleeps secs[name].
func (f *fleet) builders(secs map[string]string) {
	f.t.Helper()
	f.must("POST", "/api/v1/sources", map[string]string{"name": "py", "type": "git-python"}, 201)
	for name, s := range secs {
		f.addBuilder(name, s)
	}
}

func (f *fleet) addBuilder(name, secs string) {
	f.t.Helper()
	dir, _ := testenv.Repo(f.t, pkg(name, secs))
	f.must("POST", "/api/v1/sources/py/git-builders", map[string]any{"name": name, "url": "file://" + dir, "branch": "main"}, 201)
}

func (f *fleet) run(name string) int64 {
	f.t.Helper()
	var resp struct{ Builds []registry.Build }
	if err := json.Unmarshal(f.must("POST", "/api/v1/sources/py/git-builders/"+name+"/run", map[string]any{}, 202), &resp); err != nil || len(resp.Builds) != 1 {
		f.t.Fatalf("run %s: %v %+v", name, err, resp)
	}
	return resp.Builds[0].ID
}

// build reads a build through the API; nil while the API cannot answer.
func (f *fleet) build(id int64) *registry.Build {
	code, out := f.do("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil)
	if code != 200 {
		return nil
	}
	var b registry.Build
	if err := json.Unmarshal(out, &b); err != nil {
		f.t.Fatal(err)
	}
	return &b
}

func (f *fleet) waitStatus(id int64, timeout time.Duration, ok func(*registry.Build) bool, what string) *registry.Build {
	f.t.Helper()
	var b *registry.Build
	testenv.Eventually(f.t, timeout, fmt.Sprintf("build %d %s", id, what), func() bool {
		b = f.build(id)
		return b != nil && ok(b)
	})
	return b
}

// startFleet starts Redis, an API and a worker "w1", and waits until both
// are ready.
func (f *fleet) startFleet() (api, worker *proc) {
	f.t.Helper()
	f.startRedis()
	api = f.start("api", "api")
	worker = f.start("worker", "w1")
	testenv.Eventually(f.t, 30*time.Second, "the API to be ready", f.ready)
	testenv.Eventually(f.t, 60*time.Second, "the worker to be ready", func() bool { return worker.logged("worker ready") })
	return api, worker
}

func (f *fleet) waitDone(id int64) *registry.Build {
	f.t.Helper()
	return f.waitStatus(id, 3*time.Minute, func(b *registry.Build) bool { return registry.Terminal(b.Status) }, "to finish")
}

func running(b *registry.Build) bool { return b.Status == registry.StatusRunning }

// checkNothingLost asserts that the source, every builder and every build
// is still there, that every build succeeded, and that no build slot is
// held.
func (f *fleet) checkNothingLost(names []string, ids []int64) {
	f.t.Helper()
	for _, id := range ids {
		b := f.waitDone(id)
		if b.Status != registry.StatusSucceeded {
			f.t.Errorf("build %d (%s): %s after %d attempts: %s", id, b.Builder, b.Status, b.Attempts, b.Detail)
		} else {
			f.t.Logf("build %d (%s) succeeded on %s after %d attempt(s)", id, b.Builder, b.Worker, b.Attempts)
		}
	}
	var list struct {
		Builders []registry.Builder `json:"git_builders"`
	}
	json.Unmarshal(f.must("GET", "/api/v1/sources/py/git-builders", nil, 200), &list)
	if len(list.Builders) != len(names) {
		f.t.Errorf("%d builders listed, want %d", len(list.Builders), len(names))
	}
	sema := semaphore.New(f.rdb)
	testenv.Eventually(f.t, 10*time.Second, "every build slot to be free", func() bool {
		for _, n := range names {
			if h, err := sema.Holders(context.Background(), queue.SlotKey("py", n)); err != nil || len(h) != 0 {
				return false
			}
		}
		return true
	})
}

// sleepArg is the argument of a build's `sleep` for secs: secs with this
// test binary's pid appended to its decimals. Copies are found by command
// line across the whole host, so another go test of this package running
// at the same time (its builds sleep the same secs) is never counted.
func sleepArg(secs string) string {
	if !strings.Contains(secs, ".") {
		secs += "."
	}
	return fmt.Sprintf("%s%07d", secs, os.Getpid())
}

// sleeping reports whether a process runs `sleep secs`, anywhere on the
// host (builds run in PID namespaces of their own, but /proc shows all).
func sleeping(secs string) bool {
	want := "sleep\x00" + sleepArg(secs) + "\x00"
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && string(b) == want {
			return true
		}
	}
	return false
}

// workspaces lists the per-build TMPDIRs left under Server.TempDir.
func (f *fleet) workspaces() []string {
	ents, _ := os.ReadDir(filepath.Join(f.env["PKGFLEET_SERVER_TEMPDIR"], sandbox.WorkspacesDir))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// mounts lists mounts of the host that mention the test's directory: a
// sandbox's mounts live in its own namespace and must never show here.
func (f *fleet) mounts() []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, f.dir) {
			out = append(out, line)
		}
	}
	return out
}

func pairs(kv []string) []string {
	var out []string
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, kv[i]+"="+kv[i+1])
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func TestRedisRestartMidRunLosesNothingAndEveryoneReconnects(t *testing.T) {
	t.Parallel()
	f := setup(t)
	apiProc, w := f.startFleet()

	// Two slots, five builds: two run and three wait in the queue when
	// Redis goes away.
	secs := map[string]string{"r1": "3.01", "r2": "3.02", "r3": "1.03", "r4": "1.04", "r5": "1.05"}
	names := []string{"r1", "r2", "r3", "r4", "r5"}
	f.builders(secs)
	var ids []int64
	for _, n := range names {
		ids = append(ids, f.run(n))
	}
	f.waitStatus(ids[0], time.Minute, running, "to run")

	f.stopRedis(syscall.SIGKILL)
	testenv.Eventually(t, 10*time.Second, "readyz to say Redis is gone", func() bool {
		code, _ := f.do("GET", "/readyz", nil)
		return code == http.StatusServiceUnavailable
	})
	testenv.Eventually(t, 20*time.Second, "the worker to notice Redis is gone", func() bool {
		return w.logged("connection refused")
	})
	f.startRedis()
	testenv.Eventually(t, 30*time.Second, "the API to be ready again", f.ready)

	f.checkNothingLost(names, ids)
	// The API and the worker reconnected by themselves: a new build goes
	// all the way through.
	f.addBuilder("after", "0.1")
	f.checkNothingLost(append(names, "after"), []int64{f.run("after")})
	for _, p := range []*proc{apiProc, w} {
		select {
		case <-p.done:
			t.Fatalf("%s exited instead of reconnecting", p.log)
		default:
		}
	}
}

func TestProcessesStartedBeforeRedisWaitWithBackoffThenServe(t *testing.T) {
	t.Parallel()
	f := setup(t)
	apiProc := f.start("api", "api")
	w := f.start("worker", "w1")
	// The API serves at once and says it is not ready; both log the wait.
	testenv.Eventually(t, 30*time.Second, "readyz to answer 503", func() bool {
		code, _ := f.do("GET", "/readyz", nil)
		return code == http.StatusServiceUnavailable
	})
	for _, p := range []*proc{apiProc, w} {
		testenv.Eventually(t, 60*time.Second, p.log+" to log that it waits for Redis", func() bool {
			return p.logged(`msg="waiting for Redis"`) && p.logged("retry_in=400ms")
		})
	}
	if f.ready() || w.logged("worker ready") {
		t.Fatal("ready without Redis")
	}
	f.startRedis()
	testenv.Eventually(t, 30*time.Second, "the API to be ready", f.ready)
	testenv.Eventually(t, 30*time.Second, "the worker to be ready", func() bool { return w.logged("worker ready") })
	f.builders(map[string]string{"late": "0.1"})
	f.checkNothingLost([]string{"late"}, []int64{f.run("late")})
}

func TestAPIRestartDuringBuildsLosesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	apiProc, _ := f.startFleet()
	names := []string{"a1", "a2", "a3", "a4"}
	f.builders(map[string]string{"a1": "2.01", "a2": "2.02", "a3": "0.53", "a4": "0.54"})
	var ids []int64
	for _, n := range names {
		ids = append(ids, f.run(n))
	}
	f.waitStatus(ids[0], time.Minute, running, "to run")
	apiProc.stop(t, syscall.SIGTERM)
	if code, _ := f.do("GET", "/readyz", nil); code != 0 {
		t.Fatalf("the API still answers after SIGTERM (%d)", code)
	}
	f.start("api", "api2")
	testenv.Eventually(t, 30*time.Second, "the new API to be ready", f.ready)
	f.checkNothingLost(names, ids)
}

func TestSIGTERMFinishesShortBuildsAndRequeuesLongOnesWithoutLeaks(t *testing.T) {
	t.Parallel()
	// A grace far above the short build's length, so that a loaded CI
	// machine still finishes it in time, and far below the long one's.
	f := setup(t, "PKGFLEET_WORKER_SHUTDOWNGRACE", "15s")
	_, w1 := f.startFleet()
	f.builders(map[string]string{"short": "1.51", "long": "40.02"})
	short, long := f.run("short"), f.run("long")
	f.waitStatus(short, time.Minute, running, "to run")
	f.waitStatus(long, time.Minute, running, "to run")
	testenv.Eventually(t, time.Minute, "both builds' sleeps", func() bool { return sleeping("1.51") && sleeping("40.02") })

	w1.stop(t, syscall.SIGTERM)
	if !w1.cmd.ProcessState.Success() {
		t.Fatalf("worker exited with %v after SIGTERM", w1.cmd.ProcessState)
	}
	// Within the grace: finished on w1.
	if b := f.build(short); b.Status != registry.StatusSucceeded || b.Worker != "w1" {
		t.Fatalf("short build after SIGTERM: %s on %s: %s", b.Status, b.Worker, b.Detail)
	}
	// Past the grace: back in the queue, with nothing of it left behind.
	if b := f.build(long); registry.Terminal(b.Status) {
		t.Fatalf("long build after SIGTERM: %s: %s", b.Status, b.Detail)
	}
	if sleeping("40.02") {
		t.Fatal("the requeued build's process outlived its worker")
	}
	if ws := f.workspaces(); len(ws) != 0 {
		t.Fatalf("workspaces left after a graceful stop: %v", ws)
	}
	if m := f.mounts(); len(m) != 0 {
		t.Fatalf("mounts left on the host: %v", m)
	}
	w2 := f.start("worker", "w2")
	b := f.waitDone(long)
	if b.Status != registry.StatusSucceeded || b.Worker != "w2" {
		t.Fatalf("long build: %s on %s: %s", b.Status, b.Worker, b.Detail)
	}
	f.checkNothingLost([]string{"short", "long"}, []int64{short, long})
	_ = w2
}

func TestKilledWorkerLeavesNoProcessWorkspaceOrMount(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, w1 := f.startFleet()
	f.builders(map[string]string{"victim": "300.03"})
	id := f.run("victim")
	testenv.Eventually(t, time.Minute, "the build's sleep", func() bool { return sleeping("300.03") })
	if len(f.workspaces()) == 0 {
		t.Fatal("no workspace while the build runs: the check below would prove nothing")
	}
	w1.stop(t, syscall.SIGKILL)
	// The kernel ends every process of the sandbox with its worker.
	testenv.Eventually(t, 10*time.Second, "the build's processes to die with the worker", func() bool { return !sleeping("300.03") })
	if m := f.mounts(); len(m) != 0 {
		t.Fatalf("mounts left on the host: %v", m)
	}
	// The build's slot returns when its lease ends (6s here).
	sema := semaphore.New(f.rdb)
	testenv.Eventually(t, 15*time.Second, "the killed build's slot to return", func() bool {
		h, err := sema.Holders(context.Background(), queue.SlotKey("py", "victim"))
		return err == nil && len(h) == 0
	})
	// Nobody was left to remove its TMPDIR; the next worker on the host
	// does so when it starts.
	left := f.workspaces()
	w2 := f.start("worker", "w2")
	testenv.Eventually(t, 60*time.Second, "the next worker to be ready", func() bool { return w2.logged("worker ready") })
	if ws := f.workspaces(); len(ws) != 0 {
		t.Fatalf("workspaces left after a new worker started: %v (after the kill: %v)", ws, left)
	}
	t.Logf("after the kill: workspaces %v; after the next worker started: none", left)
	if b := f.build(id); registry.Terminal(b.Status) {
		t.Fatalf("killed build is %s; it must wait for asynq's recoverer", b.Status)
	}
}
