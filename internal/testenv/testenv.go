// Package testenv holds the fixtures pkgfleet's tests share: a real
// redis-server per test package on a unix socket in a temp dir, a fresh
// database per test, required-tool checks, and local git repositories.
//
// Only tests import it.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Require fails the test when tool is missing and CI=true, and skips it
// otherwise: a missing tool must never let CI pass silently.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, tool, err)
		}
	}
}

// RequirePython is Require for modules of the interpreter python (the
// build backends Debian packages, installed by scripts/deps.sh --tests).
func RequirePython(t testing.TB, python string, modules ...string) {
	t.Helper()
	for _, m := range modules {
		if out, err := exec.Command(python, "-c", "import "+m).CombinedOutput(); err != nil {
			missing(t, "python module "+m, fmt.Errorf("%v: %s", err, out))
		}
	}
}

func missing(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required (CI=true; scripts/deps.sh --tests installs it): %v", what, err)
	}
	t.Skipf("%s not installed", what)
}

// Redis is one redis-server started for a test package.
type Redis struct {
	Socket string
	cmd    *exec.Cmd
	dir    string
	nextDB atomic.Int32
}

const databases = 256

// StartRedis starts redis-server on a unix socket in a fresh temp dir. Call
// it from TestMain and Stop it when m.Run returns.
func StartRedis() (*Redis, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server is required to run these tests (make test installs it): %w", err)
	}
	dir, err := os.MkdirTemp("", "pkgfleet-redis-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(path,
		"--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--dir", dir, "--save", "", "--appendonly", "no",
		"--databases", fmt.Sprint(databases), "--maxmemory-policy", "noeviction")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ready := make(chan struct{})
	var logs strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if strings.Contains(strings.ToLower(sc.Text()), "ready to accept connections") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("redis-server did not start: %s", logs.String())
	}
	return &Redis{Socket: sock, cmd: cmd, dir: dir}, nil
}

// Stop kills the server and removes its directory.
func (r *Redis) Stop() {
	if r == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	os.RemoveAll(r.dir)
}

// DB hands a test a database of its own, flushed, and closes the client
// when the test ends.
func (r *Redis) DB(t testing.TB) (*redis.Client, int) {
	t.Helper()
	db := int(r.nextDB.Add(1)) % databases
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: r.Socket, DB: db})
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("flush redis db %d: %v", db, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, db
}

// MainWithRedis is a TestMain body: it starts redis, stores it in *dst, runs
// the tests and stops redis (and the S3 server, if a test started one).
func MainWithRedis(m *testing.M, dst **Redis) int {
	r, err := StartRedis()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*dst = r
	defer r.Stop()
	defer StopS3()
	return m.Run()
}

// Eventually polls cond until it returns true or the deadline passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Git runs git in dir and fails the test on error.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=pkgfleet test", "GIT_AUTHOR_EMAIL=test@invalid",
		"GIT_COMMITTER_NAME=pkgfleet test", "GIT_COMMITTER_EMAIL=test@invalid",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Repo makes a git repository in a temp dir from files (path → content),
// commits them and returns the directory and the commit sha.
func Repo(t testing.TB, files map[string]string) (dir, sha string) {
	t.Helper()
	Require(t, "git")
	dir = t.TempDir()
	Git(t, dir, "init", "--quiet", "--initial-branch=main")
	return dir, Commit(t, dir, files, "initial")
}

// Commit writes files into the repository and commits them.
func Commit(t testing.TB, dir string, files map[string]string, msg string) string {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	Git(t, dir, "add", "-A")
	Git(t, dir, "commit", "--quiet", "--allow-empty", "-m", msg)
	return Git(t, dir, "rev-parse", "HEAD")
}

// CopyTree copies the regular files of src into a map for Repo/Commit.
func CopyTree(t testing.TB, src string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		files[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// Logger returns a logger that writes into the test's log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Capture is a concurrency-safe buffer of everything a test's logger wrote.
type Capture struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (c *Capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// String returns what was captured.
func (c *Capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// CapturingLogger logs into the test's log and into the returned Capture,
// so a test can scan what was logged (e.g. for secrets).
func CapturingLogger(t testing.TB) (*slog.Logger, *Capture) {
	c := &Capture{}
	return slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, c), &slog.HandlerOptions{Level: slog.LevelDebug})), c
}

// SharedDir returns a fresh temp dir that an unprivileged user can reach
// (it and its test-owned parents are 0755): builds run as such a user
// when the tests run as root.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(d) == os.TempDir() {
			break
		}
	}
	return dir
}

// JSON sends body (if not nil) as JSON to url and fails the test unless
// the answer has status want; it returns the answer's body.
func JSON(t testing.TB, method, url string, body any, want int) []byte {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, want, out)
	}
	return out
}

// CommandCounter is a go-redis hook that counts the commands a client
// sends, by name, leaving out the handshake of new pool connections (so a
// test measures the work, not the pool). Add it with client.AddHook.
type CommandCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

// DialHook implements redis.Hook.
func (c *CommandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (c *CommandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.add(cmd.Name())
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (c *CommandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			c.add(cmd.Name())
		}
		return next(ctx, cmds)
	}
}

func (c *CommandCounter) add(name string) {
	switch name = strings.ToLower(name); name {
	case "hello", "client", "select", "auth":
		return // a new connection's handshake
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]int{}
	}
	c.counts[name]++
}

// Reset forgets what was counted.
func (c *CommandCounter) Reset() { c.mu.Lock(); c.counts = nil; c.mu.Unlock() }

// Total returns the number of commands and the count of each.
func (c *CommandCounter) Total() (n int, by map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	by = map[string]int{}
	for k, v := range c.counts {
		n += v
		by[k] = v
	}
	return n, by
}

// HostService listens on a loopback port for the length of the test and
// answers every connection with greeting: a host service that sandboxed
// builds must not reach.
func HostService(t testing.TB, greeting string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(greeting))
			c.Close()
		}
	}()
	return ln
}

// FreePort is a TCP port on 127.0.0.1 that nothing listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ArtifactDir returns a directory for what a test leaves for people to
// look at (screenshots): $PKGFLEET_TEST_ARTIFACTS/<test>, else
// <temp>/pkgfleet-test-artifacts/<test>. It is kept after the test and
// never inside the repository.
func ArtifactDir(t testing.TB) string {
	t.Helper()
	root := os.Getenv("PKGFLEET_TEST_ARTIFACTS")
	if root == "" {
		root = filepath.Join(os.TempDir(), "pkgfleet-test-artifacts")
	}
	dir := filepath.Join(root, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
