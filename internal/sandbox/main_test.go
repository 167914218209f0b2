package sandbox_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
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
func mkdirOpen(t *testing.T, p string) string {
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
		DataDir:     filepath.Join(base, "data"),
		BuilderDir:  filepath.Join(base, "data", "builder"),
		ConfigDir:   filepath.Join(base, "config"),
		SockFileDir: filepath.Join(base, "run"),
		TempDir:     mkdirOpen(t, filepath.Join(base, "tmp")),
		StorageLocations: []string{filepath.Join(base, "storage")},
		Defaults:    sandbox.Limits{Timeout: 30 * time.Second, Output: 1 << 20},
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
		Env:    []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/nonexistent"},
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

func TestSmoke(t *testing.T) {
	e := setup(t)
	res, out := e.sh("id; echo hello; cat /proc/self/status | grep -E 'Cap|NoNew|Seccomp'; cat /proc/self/uid_map; ls /; echo $TMPDIR; ls -la /proc/self/fd; hostname; mount | head -40")
	t.Logf("res=%+v\n%s", res, out)
	if !strings.Contains(out, "hello") {
		t.Fatal("no hello")
	}
}
