package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestMakeRunWorksFromAClosedPathWithASpace is issue 28's first command
// where most people clone: scripts/run.sh (make run) in a checkout under a
// 0700 directory whose path has a space, which the build user cannot
// traverse. Both examples build, the builds page lists them (with their
// file:// URLs decoded), and Ctrl-C stops everything and removes the
// builds' work directory.
func TestMakeRunWorksFromAClosedPathWithASpace(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git", "R", "python3", "redis-server", "curl", "go", "bash")
	closed := filepath.Join(t.TempDir(), "my work")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	checkout := filepath.Join(closed, "pkgfleet")
	copyCheckout(t, checkout)

	port, metricsPort := testenv.FreePort(t), testenv.FreePort(t)
	for metricsPort == port {
		metricsPort = testenv.FreePort(t)
	}
	// run.sh's settings only: none of the caller's PKGFLEET_* (an outside
	// Redis, a config) may leak in.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PKGFLEET_") {
			env = append(env, kv)
		}
	}
	env = append(env, fmt.Sprintf("PKGFLEET_PORT=%d", port), fmt.Sprintf("PKGFLEET_WORKER_METRICS_PORT=%d", metricsPort))
	// A process that ignores SIGINT passes that on to what it starts, and a
	// script that starts with SIGINT ignored cannot trap it; catching it
	// here makes the child start with the default, as from a terminal.
	if signal.Ignored(os.Interrupt) {
		c := make(chan os.Signal, 1)
		signal.Notify(c, os.Interrupt)
		defer signal.Stop(c)
	}
	out := &testenv.Capture{}
	cmd := exec.Command("bash", "scripts/run.sh")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = checkout, env, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited { // a failed test: stop it the way a person would
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(time.Minute):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		}
		if t.Failed() {
			t.Logf("scripts/run.sh said:\n%s", out)
		}
	})

	// Building the binaries in the fresh copy and both examples take a
	// few minutes on a busy machine.
	testenv.Eventually(t, 15*time.Minute, "run.sh to build the examples", func() bool {
		select {
		case err := <-done:
			exited = true
			t.Fatalf("scripts/run.sh exited early: %v", err)
		default:
		}
		return strings.Contains(out.String(), "pkgfleet is running")
	})
	if strings.Contains(out.String(), "an example build failed") {
		t.Fatal("an example build failed")
	}
	m := regexp.MustCompile(`build dirs +(\S+)`).FindStringSubmatch(out.String())
	if m == nil || !strings.HasPrefix(m[1], "/var/tmp/") {
		t.Fatalf("run.sh does not say where its builds' work directory is, under /var/tmp")
	}
	work := m[1]
	if st, err := os.Stat(work); err != nil || st.Mode().Perm() != 0o711 {
		t.Errorf("the builds' work directory %s: %v, want mode 0711", work, err)
	}

	api := fmt.Sprintf("http://127.0.0.1:%d", port)
	var builds apiv1.Builds
	if err := json.Unmarshal([]byte(scrape(t, api+"/api/v1/builds")), &builds); err != nil {
		t.Fatal(err)
	}
	succeeded := map[string]bool{}
	for _, b := range builds.Builds {
		succeeded[b.Builder] = succeeded[b.Builder] || b.Status == apiv1.StatusSucceeded
	}
	if !succeeded["hellofleet"] || !succeeded["hellofleet-py"] {
		t.Errorf("builds %+v, want hellofleet and hellofleet-py succeeded", builds.Builds)
	}
	page := html.UnescapeString(scrape(t, api+"/"))
	for _, want := range []string{
		`id="builder-r-demo-hellofleet"`, `id="builder-py-demo-hellofleet-py"`,
		"<code>file://" + filepath.Join(checkout, "var", "repos", "hellofleet") + "</code>",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the builds page lacks %q", want)
		}
	}
	if n := strings.Count(page, `class="status-succeeded"`); n < 2 {
		t.Errorf("the builds page lists %d succeeded builds, want 2", n)
	}

	// Ctrl-C: run.sh stops the worker, the API and Redis, and removes the
	// work directory.
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Errorf("scripts/run.sh after Ctrl-C: %v, want exit 0", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("scripts/run.sh did not stop within 2 minutes of Ctrl-C")
	}
	if !strings.Contains(out.String(), "run: stopped") {
		t.Error("run.sh did not say it stopped")
	}
	if _, err := os.Stat(work); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the builds' work directory %s is still there: %v", work, err)
	}
	for _, p := range []int{port, metricsPort} {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			c.Close()
			t.Errorf("something still listens on port %d after Ctrl-C", p)
		}
	}
}

// copyCheckout copies the repository's files (tracked, and new ones git
// does not ignore) as they are in the working tree to dst: the checkout a
// person would have, without this one's var/ or bin/.
func copyCheckout(t *testing.T, dst string) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, rel := range strings.Split(strings.TrimRight(string(list), "\x00"), "\x00") {
		src := filepath.Join(root, rel)
		st, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if st.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err == nil {
				err = os.Symlink(target, to)
			}
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}
