//go:build linux

package sandbox_test

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// buildUserName is who a root worker's builds run as with RunAsUser
// unset: the pkgfleet account (scripts/deps.sh makes it), else nobody.
func buildUserName(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"pkgfleet", "nobody"} {
		if _, err := user.Lookup(name); err == nil {
			return name
		}
	}
	t.Fatal("neither the pkgfleet nor the nobody account exists")
	return ""
}

// reachConfig is a sandbox config whose directories all sit in a
// directory every user can enter.
func reachConfig(t *testing.T) (sandbox.Config, string) {
	t.Helper()
	base := mkdirOpen(t, t.TempDir())
	mkdirOpen(t, filepath.Dir(base))
	return sandbox.Config{
		DataDir: filepath.Join(base, "data"),
		TempDir: mkdirOpen(t, filepath.Join(base, "tmp")),
		WorkDir: mkdirOpen(t, filepath.Join(base, "data", "builder", "work")),
	}, base
}

// mkdirClosed makes a directory only its owner (root) may enter, below
// parents every user can.
func mkdirClosed(t *testing.T, p string) string {
	t.Helper()
	if err := os.Chmod(mkdirOpen(t, p), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

// refusal is New's refusal of cfg, which must be a precondition's: one
// line, not about user namespaces.
func refusal(t *testing.T, cfg sandbox.Config) string {
	t.Helper()
	_, err := sandbox.New(cfg)
	if err == nil {
		t.Fatal("sandbox.New accepted a directory the build user cannot reach")
	}
	var pe *sandbox.PreconditionError
	if !errors.As(err, &pe) {
		t.Fatalf("sandbox.New: %v (%T), want a *sandbox.PreconditionError", err, err)
	}
	msg := err.Error()
	if errors.Is(err, sandbox.ErrUnavailable) || strings.Contains(msg, "namespace") {
		t.Errorf("the refusal blames user namespaces: %s", msg)
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("the refusal is more than one line: %q", msg)
	}
	return msg
}

func wantAll(t *testing.T, msg string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("the refusal does not say %q:\n%s", p, msg)
		}
	}
}

// TestUnreachableDirectoriesAreNamed: for each directory the build user
// must reach, a root worker refuses with the directory that blocks it,
// its owner and mode, the build user, and the setting that fixes it.
func TestUnreachableDirectoriesAreNamed(t *testing.T) {
	rootOnly(t)
	who := buildUserName(t)
	cases := []struct {
		name    string
		arrange func(cfg *sandbox.Config, base string) (blocker string)
		setting string
	}{
		{"TempDir below a closed directory", func(cfg *sandbox.Config, base string) string {
			closed := mkdirClosed(t, filepath.Join(base, "home", "me"))
			cfg.TempDir = filepath.Join(closed, "checkout", "var", "tmp")
			return closed
		}, "Server.TempDir"},
		{"TempDir itself closed", func(cfg *sandbox.Config, base string) string {
			return mkdirClosed(t, cfg.TempDir)
		}, "Server.TempDir"},
		{"work directory below a closed directory", func(cfg *sandbox.Config, base string) string {
			closed := mkdirClosed(t, filepath.Join(base, "my data"))
			cfg.WorkDir = mkdirOpen(t, filepath.Join(closed, "builder", "work"))
			return closed
		}, "Server.DataDir or Git.BuilderDir"},
		{"work directory itself closed", func(cfg *sandbox.Config, base string) string {
			return mkdirClosed(t, cfg.WorkDir)
		}, "Server.DataDir or Git.BuilderDir"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, base := reachConfig(t)
			blocker := c.arrange(&cfg, base)
			msg := refusal(t, cfg)
			wantAll(t, msg, "build user "+who, "cannot traverse "+blocker+" (owner root:root, mode 0700)",
				"("+c.setting+")", "remedy: set "+c.setting+" to a directory "+who+" can traverse")
		})
	}
}

// TestWorkspaceRootPreconditions: the workspace root must be the
// worker's own, closed to writers and open to the build user.
func TestWorkspaceRootPreconditions(t *testing.T) {
	rootOnly(t)
	who := buildUserName(t)
	acc, err := user.Lookup(who)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(acc.Uid)
	cases := []struct {
		name    string
		arrange func(ws string)
		want    []string
	}{
		{"closed to the build user", func(ws string) { mkdirClosed(t, ws) },
			[]string{"build user " + who, "cannot enter the workspace root", "owner root:root, mode 0700", "chmod 0711"}},
		{"writable by others", func(ws string) {
			mkdirOpen(t, ws)
			if err := os.Chmod(ws, 0o777); err != nil {
				t.Fatal(err)
			}
		}, []string{"is writable by others", "mode 0777", "remedy: remove it"}},
		{"someone else's", func(ws string) {
			mkdirOpen(t, ws)
			if err := os.Chown(ws, uid, -1); err != nil {
				t.Fatal(err)
			}
		}, []string{"is not the worker's own", "owner " + who + ":root", "Server.TempDir"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, _ := reachConfig(t)
			ws := filepath.Join(cfg.TempDir, sandbox.WorkspacesDir)
			c.arrange(ws)
			wantAll(t, refusal(t, cfg), append(c.want, ws)...)
		})
	}
}

// TestMissingBuildUserIsNamed: a RunAsUser that does not exist is named
// with the remedy, before anything else is tried.
func TestMissingBuildUserIsNamed(t *testing.T) {
	rootOnly(t)
	cfg, _ := reachConfig(t)
	cfg.RunAsUser = "no-such-pkgfleet-user"
	wantAll(t, refusal(t, cfg), `build user "no-such-pkgfleet-user" (Server.RunAsUser) does not exist`, "remedy:")
}

// TestReachableDirectoriesPass: the same layout with every directory open
// starts the sandbox, and the workspace root it makes is 0711 whatever
// the umask.
func TestReachableDirectoriesPass(t *testing.T) {
	cfg, _ := reachConfig(t)
	cfg.Tier = sandbox.Tier(os.Getenv("PKGFLEET_TEST_TIER"))
	old := syscall.Umask(0o077)
	_, err := sandbox.New(cfg)
	syscall.Umask(old)
	if err != nil {
		t.Fatalf("sandbox.New: %v", err)
	}
	st, err := os.Stat(filepath.Join(cfg.TempDir, sandbox.WorkspacesDir))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o711 {
		t.Errorf("workspace root mode %04o, want 0711", st.Mode().Perm())
	}
}
