//go:build linux

package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

func TestMain(m *testing.M) {
	// BenchmarkToolSlowdown's confined runs: this binary re-executed to
	// exec a tool under one confinement alone.
	if what := os.Getenv("PKGFLEET_BENCH_CONFINE"); what != "" {
		os.Unsetenv("PKGFLEET_BENCH_CONFINE")
		fmt.Fprintln(os.Stderr, sandbox.ConfineAndExec(what, os.Args[1:]))
		os.Exit(2)
	}
	sandbox.Init()
	code := m.Run()
	if probeDir != "" {
		os.RemoveAll(probeDir)
	}
	os.Exit(code)
}

// env is one test's sandbox: a runner whose masked directories each hold a
// world-readable secret file, and a source and dest the build may write.
type env struct {
	t       *testing.T
	r       *sandbox.Namespaces
	cfg     sandbox.Config
	base    string
	source  string
	dest    string
	secrets []string // absolute paths of files no build may read
}

// mkdirOpen makes a directory every user can enter, so that a root test
// run can hand it to the unprivileged run-as user.
func mkdirOpen(t testing.TB, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func setup(t *testing.T) *env {
	t.Helper()
	// t.TempDir and its per-test parent are 0700: open both for the run-as user.
	base := mkdirOpen(t, t.TempDir())
	mkdirOpen(t, filepath.Dir(base))
	e := &env{t: t, base: base}
	e.cfg = sandbox.Config{
		DataDir:          filepath.Join(base, "data"),
		BuilderDir:       filepath.Join(base, "data", "builder"),
		ConfigDir:        filepath.Join(base, "config"),
		SockFileDir:      filepath.Join(base, "run"),
		TempDir:          mkdirOpen(t, filepath.Join(base, "tmp")),
		StorageLocations: []string{filepath.Join(base, "storage")},
		Defaults:         sandbox.Limits{Timeout: 30 * time.Second, Output: 1 << 20},
		// PKGFLEET_TEST_TIER=masked-proc runs the whole suite in that tier on a host
		// that could do better (make test does, and so do the container tests).
		Tier: sandbox.Tier(os.Getenv("PKGFLEET_TEST_TIER")),
	}
	e.source = mkdirOpen(t, filepath.Join(e.cfg.BuilderDir, "job1", "src"))
	e.dest = mkdirOpen(t, filepath.Join(e.cfg.BuilderDir, "job1", "dest"))
	for _, d := range []string{e.cfg.DataDir, e.cfg.BuilderDir, e.cfg.ConfigDir, e.cfg.SockFileDir, e.cfg.StorageLocations[0]} {
		mkdirOpen(t, d)
		p := filepath.Join(d, "secret.txt")
		if err := os.WriteFile(p, []byte("TOPSECRET\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		e.secrets = append(e.secrets, p)
	}
	r, err := sandbox.New(e.cfg)
	if err != nil {
		t.Fatalf("sandbox.New: %v", err)
	}
	e.r = r
	return e
}

// sh runs a shell script in the sandbox and returns its result and output.
func (e *env) sh(script string, mod ...func(*sandbox.Spec)) (sandbox.Result, string) {
	e.t.Helper()
	var out bytes.Buffer
	spec := sandbox.Spec{
		Args:   []string{"/bin/sh", "-c", script},
		Env:    []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/nonexistent", "TMPDIR=/tmp"},
		Source: e.source,
		Dest:   e.dest,
		Dir:    e.source,
		Output: &out,
	}
	for _, m := range mod {
		m(&spec)
	}
	res, err := e.r.Run(context.Background(), spec)
	if err != nil {
		e.t.Fatalf("Run(%q): %v\noutput: %s", script, err, out.String())
	}
	return res, out.String()
}

// need returns the path of a host tool a test uses. Missing, it skips the
// test locally but fails it in CI (CI=true), so CI never passes vacuously.
func need(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI: %v", tool, err)
		}
		t.Skipf("%s not installed: %v", tool, err)
	}
	return p
}

// rootOnly skips tests that must plant root-owned files; CI runs as root.
func rootOnly(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" && os.Getenv("PKGFLEET_TEST_UNPRIVILEGED") == "" {
			t.Fatal("CI must run this suite as root (set PKGFLEET_TEST_UNPRIVILEGED=1 for the unprivileged pass)")
		}
		t.Skip("needs root to plant root-owned files in system directories")
	}
}

var (
	probeOnce sync.Once
	probeDir  string // built here, removed by TestMain
	probePath string
	probeErr  error
)

// probe builds testdata/probe once and copies it into e's source tree,
// returning its path as the sandbox sees it.
func (e *env) probe() string {
	e.t.Helper()
	probeOnce.Do(func() {
		// A prebuilt probe, for runs without a Go toolchain at hand (the
		// unprivileged CI pass runs the compiled test binary as another user).
		if p := os.Getenv("PKGFLEET_SANDBOX_PROBE"); p != "" {
			probePath = p
			return
		}
		dir, err := os.MkdirTemp("", "sandbox-probe-")
		if err != nil {
			probeErr = err
			return
		}
		probeDir, probePath = dir, filepath.Join(dir, "probe")
		cmd := exec.Command("go", "build", "-o", probePath, "./testdata/probe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeErr = fmt.Errorf("build probe: %v\n%s", err, out)
		}
	})
	if probeErr != nil {
		e.t.Fatal(probeErr)
	}
	dst := filepath.Join(e.source, "probe")
	copyFile(e.t, probePath, dst, 0o755)
	return dst
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, mode); err != nil {
		t.Fatal(err)
	}
}

// run runs argv in the sandbox.
func (e *env) run(argv []string, mod ...func(*sandbox.Spec)) (sandbox.Result, string) {
	e.t.Helper()
	return e.sh("", append([]func(*sandbox.Spec){func(s *sandbox.Spec) { s.Args = argv }}, mod...)...)
}

// heldBuild starts a build beside the test that runs script, then waits
// until release is called. It returns once the build has printed a line
// starting with ready, and the rest of that line.
func (e *env) heldBuild(script, ready string, env []string) (rest string, release func()) {
	e.t.Helper()
	fifo := filepath.Join(e.dest, "hold")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		e.t.Fatal(err)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := e.r.Run(context.Background(), sandbox.Spec{
			Args: []string{"/bin/sh", "-c", script + "; cat " + fifo},
			Env:  env, Dest: e.dest, Dir: e.dest, Output: pw,
		})
		pw.Close()
		done <- err
	}()
	found := false
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if r, ok := strings.CutPrefix(sc.Text(), ready); ok {
			rest, found = r, true
			break
		}
	}
	go io.Copy(io.Discard, pr)
	release = func() {
		e.t.Helper()
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
		if err := <-done; err != nil {
			e.t.Fatal(err)
		}
	}
	if !found {
		release()
		e.t.Fatalf("the held build never printed %q", ready)
	}
	return rest, release
}

// worker is a separate worker process (TestHelperWorkerProcess) running
// one build that holds two sleeps.
type worker struct {
	cmd  *exec.Cmd
	out  *bufio.Scanner // the worker's stdout after the build's "started" line
	pids []int          // the build's sleeps, as the host numbers them
}

// startWorker starts a worker process for e's configuration, with the
// dead man's switch at deadMan (0: off), and returns once its build runs.
func (e *env) startWorker(deadMan time.Duration) *worker {
	e.t.Helper()
	marker := newMarker()
	cfg, _ := json.Marshal(e.cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWorkerProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "PKGFLEET_TEST_WORKER="+string(cfg), "PKGFLEET_TEST_MARKER="+marker,
		"PKGFLEET_TEST_SOURCE="+e.source, "PKGFLEET_TEST_DEADMAN="+deadMan.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Wait()
	})
	w := &worker{cmd: cmd, out: bufio.NewScanner(stdout)}
	for w.out.Scan() && !strings.Contains(w.out.Text(), "started "+marker) {
	}
	w.pids = hostPids(marker)
	if len(w.pids) == 0 {
		e.t.Fatal("build process not found on the host")
	}
	return w
}

// newMarker returns a number unlikely to be on any command line yet, for
// `sleep <marker>` to make a build's processes findable from the host.
func newMarker() string {
	return fmt.Sprintf("%d.%d", 900000+os.Getpid()%1000, time.Now().UnixNano()%1000)
}

// hostPids lists the host's processes whose command line holds marker.
func hostPids(marker string) []int {
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		b, _ := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if strings.Contains(string(b), marker) {
			pid, _ := strconv.Atoi(p.Name())
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGone waits up to deadline for every process of pids to exit and
// returns those still alive then.
func waitGone(t testing.TB, pids []int, deadline time.Duration) (alive []int) {
	t.Helper()
	var fds, open []int
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue // gone already
		}
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		fds, open = append(fds, fd), append(open, pid)
	}
	end := time.Now().Add(deadline)
	for i, fd := range fds {
		// A pidfd becomes readable when its process exits.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(max(time.Until(end), 0)/time.Millisecond))
		for errors.Is(err, unix.EINTR) {
			n, err = unix.Poll(pfd, int(max(time.Until(end), 0)/time.Millisecond))
		}
		if err != nil || n != 1 {
			alive = append(alive, open[i])
		}
	}
	return alive
}
