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

	run := startMakeRun(t, checkout)
	m := regexp.MustCompile(`build dirs +(\S+)`).FindStringSubmatch(run.out.String())
	if m == nil || !strings.HasPrefix(m[1], "/var/tmp/") {
		t.Fatalf("run.sh does not say where its builds' work directory is, under /var/tmp")
	}
	work := m[1]
	if st, err := os.Stat(work); err != nil || st.Mode().Perm() != 0o711 {
		t.Errorf("the builds' work directory %s: %v, want mode 0711", work, err)
	}

	api := run.api
	run.checkExamplesSucceeded(t)
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
	run.stop(t)
	if _, err := os.Stat(work); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the builds' work directory %s is still there: %v", work, err)
	}

	// A setting that does not load is named as such: the sandbox, which
	// was never probed, is not blamed.
	bad := exec.Command("bash", "scripts/run.sh")
	bad.Dir = checkout
	bad.Env = append(os.Environ(), fmt.Sprintf("PKGFLEET_PORT=%d", testenv.FreePort(t)), "PKGFLEET_GIT_BUILDTIMEOUT=soon")
	out, err := bad.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the configuration does not load") ||
		!strings.Contains(string(out), "PKGFLEET_GIT_BUILDTIMEOUT") || strings.Contains(string(out), "SANDBOX DOES NOT WORK") {
		t.Errorf("run.sh with an unloadable setting: %v\n%s", err, out)
	}
}

// makeRun is scripts/run.sh (make run) running in a copy of the checkout.
type makeRun struct {
	cmd    *exec.Cmd
	out    *testenv.Capture
	done   chan error
	exited bool
	api    string
	ports  []int // what it listens on, closed after Ctrl-C
}

// startMakeRun starts scripts/run.sh in checkout with env (NAME=value) on
// top of the caller's environment less its PKGFLEET_ variables, on free
// ports, and waits until it says it is running with both examples built.
func startMakeRun(t *testing.T, checkout string, env ...string) *makeRun {
	t.Helper()
	port, metricsPort := testenv.FreePort(t), testenv.FreePort(t)
	for metricsPort == port {
		metricsPort = testenv.FreePort(t)
	}
	// run.sh's settings only: none of the caller's PKGFLEET_* (an outside
	// Redis, a config) may leak in.
	var full []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PKGFLEET_") {
			full = append(full, kv)
		}
	}
	full = append(full, fmt.Sprintf("PKGFLEET_PORT=%d", port), fmt.Sprintf("PKGFLEET_WORKER_METRICS_PORT=%d", metricsPort))
	full = append(full, env...)
	// A process that ignores SIGINT passes that on to what it starts, and a
	// script that starts with SIGINT ignored cannot trap it; catching it
	// here makes the child start with the default, as from a terminal.
	if signal.Ignored(os.Interrupt) {
		c := make(chan os.Signal, 1)
		signal.Notify(c, os.Interrupt)
		t.Cleanup(func() { signal.Stop(c) })
	}
	r := &makeRun{out: &testenv.Capture{}, done: make(chan error, 1),
		api: fmt.Sprintf("http://127.0.0.1:%d", port), ports: []int{port, metricsPort}}
	r.cmd = exec.Command("bash", "scripts/run.sh")
	r.cmd.Dir, r.cmd.Env, r.cmd.Stdout, r.cmd.Stderr = checkout, full, r.out, r.out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() {
		if !r.exited { // a failed test: stop it the way a person would
			_ = r.cmd.Process.Signal(os.Interrupt)
			select {
			case <-r.done:
			case <-time.After(time.Minute):
				_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
				<-r.done
			}
		}
		if t.Failed() {
			t.Logf("scripts/run.sh said:\n%s", r.out)
		}
	})

	// Building the binaries in the fresh copy and both examples take a
	// few minutes on a busy machine.
	testenv.Eventually(t, 15*time.Minute, "run.sh to build the examples", func() bool {
		select {
		case err := <-r.done:
			r.exited = true
			t.Fatalf("scripts/run.sh exited early: %v", err)
		default:
		}
		return strings.Contains(r.out.String(), "pkgfleet is running")
	})
	if strings.Contains(r.out.String(), "an example build failed") {
		t.Fatal("an example build failed")
	}
	return r
}

// checkExamplesSucceeded: the API lists both examples' builds succeeded.
func (r *makeRun) checkExamplesSucceeded(t *testing.T) {
	t.Helper()
	var builds apiv1.Builds
	if err := json.Unmarshal([]byte(scrape(t, r.api+"/api/v1/builds")), &builds); err != nil {
		t.Fatal(err)
	}
	succeeded := map[string]bool{}
	for _, b := range builds.Builds {
		succeeded[b.Builder] = succeeded[b.Builder] || b.Status == apiv1.StatusSucceeded
	}
	if !succeeded["hellofleet"] || !succeeded["hellofleet-py"] {
		t.Errorf("builds %+v, want hellofleet and hellofleet-py succeeded", builds.Builds)
	}
}

// stop is Ctrl-C: run.sh stops everything it started, says so, exits 0,
// and nothing listens on its ports any more.
func (r *makeRun) stop(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		r.exited = true
		if err != nil {
			t.Errorf("scripts/run.sh after Ctrl-C: %v, want exit 0", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("scripts/run.sh did not stop within 2 minutes of Ctrl-C")
	}
	if !strings.Contains(r.out.String(), "run: stopped") {
		t.Error("run.sh did not say it stopped")
	}
	for _, p := range r.ports {
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

// PKGFLEET_STORAGE=s3 make run (issue 24) starts a local S3 server
// (versitygw) beside Redis: the examples' artifacts are objects of its
// bucket, none is on the filesystem store, the indexes serve them from the
// bucket (a Range request too), the config file names no credential, and
// Ctrl-C stops the S3 server with the rest.
func TestMakeRunStoresArtifactsInS3(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git", "R", "python3", "redis-server", "curl", "go", "bash")
	checkout := filepath.Join(t.TempDir(), "pkgfleet")
	copyCheckout(t, checkout)
	s3Port := testenv.FreePort(t)
	run := startMakeRun(t, checkout, "PKGFLEET_STORAGE=s3", fmt.Sprintf("PKGFLEET_S3_PORT=%d", s3Port))
	run.ports = append(run.ports, s3Port)
	run.checkExamplesSucceeded(t)

	// The POSIX backend keeps object <bucket>/<key> as that file.
	objects := map[string]string{}
	bucket := filepath.Join(checkout, "var", "s3", "data", "pkgfleet")
	_ = filepath.WalkDir(bucket, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			objects[filepath.Base(p)] = p
		}
		return nil
	})
	var tarball string
	for _, want := range []string{"hellofleet_0.2.0.tar.gz", "hellofleet_py-0.2.0-py3-none-any.whl"} {
		found := ""
		for name, p := range objects {
			if strings.HasSuffix(name, "-"+want) {
				found = p
			}
		}
		if found == "" {
			t.Errorf("no object for %s in bucket pkgfleet: %v", want, objects)
		}
		if want == "hellofleet_0.2.0.tar.gz" {
			tarball = found
		}
	}
	_ = filepath.WalkDir(filepath.Join(checkout, "var", "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, string(filepath.Separator)+"packages"+string(filepath.Separator)) {
			t.Errorf("%s is on the filesystem store although Storage.Default = s3", p)
		}
		return nil
	})

	url := run.api + "/cran/r-demo/src/contrib/hellofleet_0.2.0.tar.gz"
	if tarball != "" {
		stored, err := os.ReadFile(tarball)
		if err != nil {
			t.Fatal(err)
		}
		if got := scrape(t, url); got != string(stored) {
			t.Errorf("GET %s: %d bytes, not the %d of the stored object", url, len(got), len(stored))
		}
		out, err := exec.Command("curl", "-sS", "-r", "0-9", "-w", "\n%{http_code}", url).Output()
		if err != nil {
			t.Fatal(err)
		}
		body, code, _ := strings.Cut(string(out), "\n")
		if code != "206" || body != string(stored[:10]) {
			t.Errorf("curl -r 0-9 %s: %s, %q; want 206 and the object's first 10 bytes", url, code, body)
		}
	}

	cfg, err := os.ReadFile(filepath.Join(checkout, "var", "pkgfleet.gcfg"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := os.ReadFile(filepath.Join(checkout, "var", "s3", "credentials"))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(creds))
	if !strings.Contains(string(cfg), "Default = s3") || len(fields) != 2 || strings.Contains(string(cfg), fields[1]) {
		t.Errorf("the config should choose s3 and name no credential:\n%s", cfg)
	}
	if len(fields) == 2 && strings.Contains(run.out.String(), fields[1]) {
		t.Error("run.sh printed the S3 secret key")
	}

	run.stop(t)
}
