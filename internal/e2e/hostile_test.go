package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// hostileSetupPy is a setuptools package whose setup.py runs body first:
// python -m build executes setup.py inside the sandbox, so body is the
// attack.
func hostileSetupPy(name, body string) map[string]string {
	return map[string]string{
		"setup.py": "import os, socket, sys, time\n" + body +
			"\nfrom setuptools import setup\nsetup(name=" + fmt.Sprintf("%q", name) +
			", version='0.1.0', py_modules=['" + name + "'])\n",
		name + ".py": "def hello():\n    return 'hello'\n",
	}
}

// TestHostileBuildsFailWithTheirReasonWhileNormalBuildsSucceed runs every
// attack through API → queue → worker → sandbox at once, beside a normal
// build, with small limits; each attack must end with the limit or error
// that stopped it on its build record, and the worker must still build
// normally afterwards.
func TestHostileBuildsFailWithTheirReasonWhileNormalBuildsSucceed(t *testing.T) {
	t.Parallel()
	f := setup(t, map[string]string{
		"PKGFLEET_WORKER_CONCURRENCY": "4",
		"PKGFLEET_GIT_BUILDRETRIES":   "1",
		"PKGFLEET_GIT_BUILDMEMORY":    "512MiB",
		"PKGFLEET_GIT_BUILDPROCESSES": "48",
		"PKGFLEET_GIT_BUILDDISKSIZE":  "48MiB",
		"PKGFLEET_GIT_BUILDTIMEOUT":   "45s",
		"PKGFLEET_GIT_BUILDLOGSIZE":   "64KiB",
		"PKGFLEET_GIT_BUILDNETWORK":   "false",
		"PKGFLEET_GIT_ALLOWFILEURLS":  "true",
	})
	// A host service on loopback the build must not reach.
	ln := testenv.HostService(t, "host service\n")
	hostPort := ln.Addr().(*net.TCPAddr).Port

	masked := []string{f.cfg.Server.DataDir, f.cfg.Git.BuilderDir, f.cfg.Server.SockFileDir, f.cfg.FileStorage.Location}
	for _, d := range masked {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "secret.txt"), []byte("s3cret"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pyList := func(ss []string) string { return "[" + strings.Join(quoteAll(ss), ", ") + "]" }

	attacks := []struct {
		name, body string
		detail     []string // all must appear in the build's detail
		log        []string // and these in its log
	}{
		// Every process keeps forking and none gives up, so the build
		// sits at the process limit until it is ended. (perl: small
		// processes, so the memory limit does not end it first.)
		{name: "forkbomb", detail: []string{"killed", "process limit 48"}, body: `
os.execv("/usr/bin/perl", ["perl", "-e", "while (1) { fork }"])
`},
		{name: "membomb", detail: []string{"killed", "memory limit 512MiB"}, body: `
hog = []
while True:
    try:
        hog.append(b"x" * (8 << 20))
    except MemoryError:
        time.sleep(1)
    time.sleep(0.01)
`},
		{name: "diskfill", detail: []string{"killed", "disk limit 48MiB"}, body: `
d, i = os.environ.get("TMPDIR", "/tmp"), 0
while True:
    try:
        with open(os.path.join(d, "fill%d" % i), "wb") as fh:
            fh.write(b"z" * (4 << 20))
    except OSError:
        time.sleep(0.1)
    i += 1
`},
		{name: "endless", detail: []string{"killed", "timeout 45s"}, body: `
while True:
    pass
`},
		// 1 GiB on stdout: the log keeps BuildLogSize and says it was cut;
		// the build then fails on purpose (its message is past the cut).
		{name: "logflood", detail: []string{"exited with status 1"}, log: []string{"log truncated here", "Git.BuildLogSize"}, body: `
line = "y" * 1023 + "\n"
out = os.fdopen(1, "w", buffering=1 << 20)
for _ in range(1 << 20):
    out.write(line)
out.flush()
sys.exit("logged 1 GiB")
`},
		// The checkout, destination and TMPDIR are bound back at their
		// host paths, so the directories leading to them exist; nothing
		// else of the masked directories may be visible.
		{name: "masked", detail: []string{"masked: nothing visible"}, body: fmt.Sprintf(`
own = os.path.dirname(os.getcwd())
print("own work dir", own)
leaks = []
for p in %s:
    try:
        open(os.path.join(p, "secret.txt")).read()
        leaks.append(p + "/secret.txt")
    except OSError:
        pass
    for root, dirs, files in os.walk(p):
        if root == own or root.startswith(own + "/"):
            dirs[:] = []
            continue
        leaks += [os.path.join(root, f) for f in files]
        leaks += [os.path.join(root, d) for d in dirs if not own.startswith(os.path.join(root, d) + "/") and os.path.join(root, d) != own]
if leaks:
    sys.exit("VISIBLE: %%s" %% leaks)
sys.exit("masked: nothing visible")
`, pyList(masked))},
		{name: "network", detail: []string{"network: unreachable"}, body: fmt.Sprintf(`
reached = []
for host, port in [("127.0.0.1", %d), ("1.1.1.1", 53), ("8.8.8.8", 443)]:
    try:
        socket.create_connection((host, port), timeout=3).close()
        reached.append(host)
    except OSError as e:
        print("connect %%s:%%d: %%s" %% (host, port, e))
if reached:
    sys.exit("REACHED: %%s" %% reached)
sys.exit("network: unreachable")
`, hostPort)},
	}

	f.do("POST", "/api/v1/sources", map[string]string{"name": "py", "type": "git-python"}, 201)
	normalRepo := versionedRepo(t, "python/hellofleet-py", "pyproject.toml", "src/hellofleet_py/__init__.py")
	f.do("POST", "/api/v1/sources/py/git-builders", map[string]any{"name": "normal", "url": "file://" + normalRepo, "branch": "main"}, 201)
	ids := map[string]int64{}
	for _, a := range attacks {
		repo := versionedRepoFrom(t, hostileSetupPy(a.name, a.body))
		f.do("POST", "/api/v1/sources/py/git-builders", map[string]any{"name": a.name, "url": "file://" + repo, "branch": "main"}, 201)
	}
	// The normal build goes in among the attacks.
	for i, a := range attacks {
		ids[a.name] = f.run("/api/v1/sources/py/git-builders/"+a.name+"/run", nil).ID
		if i == 1 {
			ids["normal"] = f.run("/api/v1/sources/py/git-builders/normal/run", nil).ID
		}
	}

	var wg sync.WaitGroup
	builds := make(map[string]*registry.Build, len(ids))
	var mu sync.Mutex
	for name, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := f.wait(id)
			mu.Lock()
			builds[name] = b
			mu.Unlock()
		}()
	}
	wg.Wait()

	if b := builds["normal"]; b.Status != registry.StatusSucceeded {
		t.Errorf("the normal build beside the attacks: %s: %s\n%s", b.Status, b.Detail, f.log(b.ID))
	}
	for _, a := range attacks {
		b := builds[a.name]
		t.Logf("%-9s %s after %d attempt(s): %s", a.name, b.Status, b.Attempts, firstLine(b.Detail))
		if b.Status != registry.StatusFailed {
			t.Errorf("%s: status %s, want failed\n%s", a.name, b.Status, f.log(b.ID))
			continue
		}
		for _, want := range a.detail {
			if !strings.Contains(b.Detail, want) {
				t.Errorf("%s: detail %q lacks %q", a.name, b.Detail, want)
			}
		}
		log := f.log(b.ID)
		for _, want := range a.log {
			if !strings.Contains(log, want) {
				t.Errorf("%s: log lacks %q", a.name, want)
			}
		}
		if limit := 2 * int(f.cfg.Git.BuildLogSize); len(log) > limit {
			t.Errorf("%s: log is %d bytes, want at most about BuildLogSize", a.name, len(log))
		}
	}
	for _, d := range masked {
		if b, err := os.ReadFile(filepath.Join(d, "secret.txt")); err != nil || string(b) != "s3cret" {
			t.Errorf("%s/secret.txt changed: %q %v", d, b, err)
		}
	}

	// The worker is still healthy: a fresh normal build succeeds after the
	// attacks.
	testenv.Commit(t, normalRepo, map[string]string{"README.md": "after the attacks\n"}, "after")
	after := f.wait(f.run("/api/v1/sources/py/git-builders/normal/run", nil).ID)
	if after.Status != registry.StatusSucceeded || after.ID == ids["normal"] {
		t.Fatalf("normal build after the attacks: %d %s: %s", after.ID, after.Status, after.Detail)
	}
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
