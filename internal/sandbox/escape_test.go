//go:build linux

package sandbox_test

// The escape and isolation suite (issue 3, item 8). Every test attempts
// something from inside a real sandbox and checks that it fails, or checks
// a property the build must have. They run as root in CI, which covers the
// RunAsUser path, and also pass as an unprivileged user.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func TestBuildHoldsNoPrivilege(t *testing.T) {
	e := setup(t)
	res, out := e.sh("cat /proc/self/status; echo uid_map:; cat /proc/self/uid_map; echo setgroups: $(cat /proc/self/setgroups)")
	if !res.Success() {
		t.Fatalf("result %+v\n%s", res, out)
	}
	for _, want := range []string{"CapInh:\t0000000000000000", "CapPrm:\t0000000000000000",
		"CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000",
		"NoNewPrivs:\t1", "Seccomp:\t2", "setgroups: deny",
		"SigIgn:\t0000000000000000", "SigBlk:\t0000000000000000"} { // no disposition leaks from the launcher
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	m := strings.TrimSpace(out[strings.Index(out, "uid_map:")+len("uid_map:") : strings.Index(out, "setgroups:")])
	if f := strings.Fields(m); strings.Count(m, "\n") != 0 || len(f) != 3 || f[1] != "0" || f[2] != "1" {
		t.Errorf("uid_map is not one line mapping one id onto the outer root: %q", m)
	}
	uid, _ := e.r.RunAs()
	if f := strings.Fields(m); len(f) == 3 && f[0] != strconv.Itoa(uid) {
		t.Errorf("build uid %s, want the unprivileged %d", f[0], uid)
	}
	if uid == 0 {
		t.Error("builds run as host root")
	}
}

func TestMaskedDirectoriesAreUnreadable(t *testing.T) {
	e := setup(t)
	for _, s := range e.secrets {
		res, out := e.sh("cat " + s + "; ls -a " + filepath.Dir(s) + " | grep -qx secret.txt && echo LISTED")
		if strings.Contains(out, "TOPSECRET") || strings.Contains(out, "LISTED") {
			t.Errorf("masked %s readable or listable: %+v\n%s", s, res, out)
		}
	}
}

// maskedInSystemDirs puts the masked directories where bind mounts would
// expose them: the config dir under /etc (reached through a symlink too),
// data, builder and temp dirs under /opt.
func maskedInSystemDirs(t *testing.T) *env {
	rootOnly(t)
	suffix := strconv.Itoa(os.Getpid()) + "-" + strings.ReplaceAll(t.Name(), "/", "-")
	etc := filepath.Join("/etc", "pkgfleet-test-"+suffix)
	opt := filepath.Join("/opt", "pkgfleet-test-"+suffix)
	t.Cleanup(func() { os.RemoveAll(etc); os.RemoveAll(opt) })
	e := &env{t: t, base: opt}
	e.cfg = sandbox.Config{
		DataDir:          filepath.Join(opt, "data"),
		BuilderDir:       filepath.Join(opt, "data", "builder"),
		ConfigDir:        etc,
		SockFileDir:      filepath.Join(etc, "run-link"), // a symlink to a dir in /opt
		TempDir:          mkdirOpen(t, filepath.Join(opt, "tmp")),
		StorageLocations: []string{filepath.Join(opt, "storage")},
		Defaults:         sandbox.Limits{Timeout: 30 * time.Second},
	}
	mkdirOpen(t, etc)
	sock := mkdirOpen(t, filepath.Join(opt, "sock"))
	if err := os.Symlink(sock, e.cfg.SockFileDir); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{e.cfg.DataDir, e.cfg.BuilderDir, etc, sock, e.cfg.StorageLocations[0]} {
		mkdirOpen(t, d)
		p := filepath.Join(d, "secret.txt")
		if err := os.WriteFile(p, []byte("TOPSECRET\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		e.secrets = append(e.secrets, p)
	}
	// Another worker's build workspace, left world-readable.
	other := mkdirOpen(t, filepath.Join(e.cfg.TempDir, sandbox.WorkspacesDir, "ws-1-other"))
	if err := os.WriteFile(filepath.Join(other, "secret.txt"), []byte("TOPSECRET\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, filepath.Join(other, "secret.txt"))
	e.source = mkdirOpen(t, filepath.Join(e.cfg.BuilderDir, "job1", "src"))
	e.dest = mkdirOpen(t, filepath.Join(e.cfg.BuilderDir, "job1", "dest"))
	r, err := sandbox.New(e.cfg)
	if err != nil {
		t.Fatalf("sandbox.New: %v", err)
	}
	e.r = r
	return e
}

func TestMasksInsideBoundSystemDirs(t *testing.T) {
	e := maskedInSystemDirs(t)
	for _, s := range append(e.secrets, filepath.Join(e.cfg.SockFileDir, "secret.txt")) {
		res, out := e.sh("cat " + s + "; ls -a " + filepath.Dir(s) + " | grep -qx secret.txt && echo LISTED")
		if strings.Contains(out, "TOPSECRET") || strings.Contains(out, "LISTED") {
			t.Errorf("masked %s readable or listable: %+v\n%s", s, res, out)
		}
	}
	// The build's own directories, inside the masked builder and temp dirs, still work.
	res, out := e.sh(`echo a > "$TMPDIR/x" && echo b > ` + e.dest + `/x && echo c > ` + e.source + `/x && echo WROTE; ls "$(dirname "$TMPDIR")" | grep -x ws-1-other && echo LISTED`)
	if !strings.Contains(out, "WROTE") {
		t.Fatalf("own dirs not writable: %+v\n%s", res, out)
	}
	if strings.Contains(out, "LISTED") {
		t.Errorf("another workspace is visible:\n%s", out)
	}
}

func TestMasksSurviveUnmountAttempts(t *testing.T) {
	e := maskedInSystemDirs(t)
	need(t, "unshare")
	for _, script := range []string{
		"umount " + e.cfg.ConfigDir,
		"umount -l " + e.cfg.ConfigDir,
		"mount -o remount,rw " + e.cfg.ConfigDir,
		"mount --bind /usr " + e.cfg.ConfigDir,
		"unshare -Urm sh -c 'umount -l " + e.cfg.ConfigDir + "; cat " + e.cfg.ConfigDir + "/secret.txt'",
		"unshare -Ur sh -c 'cat " + e.cfg.ConfigDir + "/secret.txt'",
	} {
		res, out := e.sh(script + "; cat " + e.cfg.ConfigDir + "/secret.txt")
		if strings.Contains(out, "TOPSECRET") || res.Success() {
			t.Errorf("%q: mask defeated: %+v\n%s", script, res, out)
		}
	}
}

func TestOtherWorkspacesAreHidden(t *testing.T) {
	e := setup(t)
	other := mkdirOpen(t, filepath.Join(e.cfg.TempDir, sandbox.WorkspacesDir, "ws-1-other"))
	if err := os.WriteFile(filepath.Join(other, "secret.txt"), []byte("TOPSECRET\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, out := e.sh(`env | grep -c '^TMPDIR='; ls -a "$(dirname "$TMPDIR")" | grep -x ws-1-other && echo LISTED; cat ` + other + `/secret.txt; touch "$TMPDIR/mine" && stat -c %a "$TMPDIR"`)
	if strings.Contains(out, "LISTED") || strings.Contains(out, "TOPSECRET") {
		t.Errorf("another build's TMPDIR is visible: %+v\n%s", res, out)
	}
	if !strings.Contains(out, "700") {
		t.Errorf("own TMPDIR is not a private writable 0700 dir:\n%s", out)
	}
	if !strings.HasPrefix(out, "1\n") {
		t.Errorf("TMPDIR set more than once (the caller's must be replaced):\n%s", out)
	}
	// Removed afterwards.
	entries, _ := os.ReadDir(filepath.Join(e.cfg.TempDir, sandbox.WorkspacesDir))
	for _, en := range entries {
		if en.Name() != "ws-1-other" {
			t.Errorf("workspace %s left behind", en.Name())
		}
	}
}

func TestWritesOutsideOwnDirsFail(t *testing.T) {
	e := setup(t)
	for _, script := range []string{
		"touch /x", "mkdir /x", "touch /usr/x", "touch /etc/x", "mv /etc/hostname /etc/h2", "ln -s /x /usr/x",
		"chmod 777 /usr/bin", "touch /opt/x", "echo 1 > /proc/sys/kernel/ns_last_pid",
		"echo x > /proc/sys/kernel/hostname", "echo b > /proc/sysrq-trigger", "touch /dev/x", "touch /proc/x",
		"touch " + e.cfg.DataDir + "/x",
		// The read-only covers hold against unmounting, also from a nested namespace.
		"umount -l /proc/sys; echo 1 > /proc/sys/kernel/ns_last_pid",
		"unshare -Urm sh -c 'umount -l /proc/sys; echo 1 > /proc/sys/kernel/ns_last_pid'",
		"mount -o remount,rw /usr; touch /usr/x",
	} {
		res, out := e.sh(script)
		if res.Success() {
			t.Errorf("%q succeeded:\n%s", script, out)
		}
	}
	res, out := e.sh(`touch "$TMPDIR/a" ` + e.source + "/a " + e.dest + "/a /dev/shm/a")
	if !res.Success() {
		t.Errorf("writing own dirs failed: %+v\n%s", res, out)
	}
	// Every mount is nosuid; all but the build's own dirs, /dev/shm and the
	// device binds are read-only.
	_, out = e.sh("cat /proc/self/mountinfo")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		mp, opts := f[4], f[5]
		if !strings.Contains(opts, "nosuid") && !strings.HasPrefix(mp, "/dev/") {
			t.Errorf("mount %s lacks nosuid: %s", mp, line)
		}
		writable := mp == e.source || mp == e.dest || strings.HasPrefix(mp, "/dev/") ||
			strings.Contains(mp, sandbox.WorkspacesDir) || mp == "/proc"
		if !writable && !strings.HasPrefix(opts, "ro") {
			t.Errorf("mount %s is writable: %s", mp, line)
		}
	}
}

func TestNoHostProcessesVisible(t *testing.T) {
	e := setup(t)
	if e.r.Tier() == sandbox.TierMaskedProc {
		t.Skip("masked-proc shows the container's processes by design; the TestMaskedProc tests hold what matters there")
	}
	host := os.Getpid()
	res, out := e.sh(fmt.Sprintf(`ls /proc | grep -c '^[0-9]'; kill -0 %d && echo SIGNALLED; cat /proc/%d/environ && echo READ; cat /proc/1/environ && echo READ1; cat /proc/1/cmdline; echo; ls -l /proc/1/exe && echo EXE; ls /proc/1/root/ && echo ROOT`, host, host))
	if strings.Contains(out, "SIGNALLED") || strings.Contains(out, "READ") || strings.Contains(out, "EXE") || strings.Contains(out, "ROOT") {
		t.Errorf("host or launcher process reachable: %+v\n%s", res, out)
	}
	n, _ := strconv.Atoi(strings.SplitN(out, "\n", 2)[0])
	if n == 0 || n > 5 {
		t.Errorf("sandbox sees %d processes, want only its own few:\n%s", n, out)
	}
	// PID 1's argv carries no settings.
	if !strings.Contains(out, "pkgfleet-sandbox-launcher") {
		t.Errorf("unexpected PID 1 cmdline:\n%s", out)
	}
}

func TestSyscallFilterDeniesEscapes(t *testing.T) {
	e := setup(t)
	probe := e.probe()
	res, out := e.run([]string{probe, "syscalls"})
	if !res.Success() {
		t.Fatalf("probe: %+v\n%s", res, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			got[k] = v
		}
	}
	want := map[string]string{
		"mount": "EPERM", "mount-bind": "EPERM", "remount": "EPERM", "umount2": "EPERM",
		"pivot_root": "EPERM", "chroot": "EPERM", "setns": "EPERM",
		"unshare-user": "EPERM", "unshare-mnt": "EPERM", "clone-newuser": "EPERM", "clone3": "ENOSYS",
		"keyctl": "EPERM", "add_key": "EPERM", "request_key": "EPERM", "ptrace": "EPERM",
		"open_by_handle_at": "EPERM", "perf_event_open": "EPERM", "bpf": "EPERM", "open_tree": "ENOSYS", "move_mount": "ENOSYS",
		"fsopen": "ENOSYS", "fsconfig": "ENOSYS", "fsmount": "ENOSYS", "fspick": "ENOSYS",
		"mount_setattr": "ENOSYS", "ioctl-TIOCSTI": "EPERM", "ioctl-TIOCSTI-highbits": "EPERM",
		"ioctl-TIOCLINUX": "EPERM", "kill-pid1": "EPERM", "io_uring_setup": "EPERM",
		"setgroups": "EPERM", "setuid0": "EINVAL", "sethostname": "EPERM", "syslog": "EPERM",
		"socket-unix": "ok", "socket-inet": "ok", "socket-inet6": "ok", "socket-netlink": "ok",
		"socket-packet": "EAFNOSUPPORT", "socket-alg": "EAFNOSUPPORT", "socket-vsock": "EAFNOSUPPORT",
		"socket-tipc": "EAFNOSUPPORT",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %s", k, got[k], v)
		}
	}
}

func TestForeignSyscallABIsAreKilled(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("i386 and x32 are amd64 ABIs")
	}
	e := setup(t)
	probe := e.probe()
	for _, abi := range []string{"i386", "x32"} {
		res, out := e.run([]string{probe, abi})
		if strings.Contains(out, "survived") {
			t.Errorf("%s system call survived in the sandbox: %+v %s", abi, res, out)
		}
		if res.Signal == "SIGSYS" {
			continue
		}
		// A kernel without the ABI (ia32_emulation=0, no CONFIG_X86_X32_ABI)
		// faults the call before any filter sees it: then the host must
		// fault it too, or the filter let it through.
		host, _ := exec.Command(probe, abi).CombinedOutput()
		if strings.Contains(string(host), "survived") {
			t.Errorf("%s system call: %+v %s, want the process killed by SIGSYS (the host kernel has the ABI)", abi, res, out)
		} else {
			t.Logf("%s: this kernel has no such ABI (host run: %.80q)", abi, host)
		}
	}
}

func TestNoLoopbackReachWithoutNetwork(t *testing.T) {
	e := setup(t)
	probe := e.probe()
	ln := testenv.HostService(t, "")
	res, out := e.run([]string{probe, "connect", ln.Addr().String()})
	if res.Success() || strings.Contains(out, "connect: ok") {
		t.Errorf("reached host loopback without Network: %+v\n%s", res, out)
	}
	_, out = e.sh("cat /proc/net/dev | grep -c ':'; cat /sys/class/net/lo/operstate 2>/dev/null; ip -o link 2>/dev/null | wc -l")
	if !strings.HasPrefix(out, "1\n") {
		t.Errorf("more than lo in the network namespace: %s", out)
	}
	// Positive control: with Network the same probe connects.
	res, out = e.run([]string{probe, "connect", ln.Addr().String()}, func(s *sandbox.Spec) { s.Network = true })
	if !res.Success() {
		t.Errorf("Network=true cannot connect: %+v\n%s", res, out)
	}
}

// TestHostAbstractSocketsUnreachable: a host service listening on an
// abstract UNIX socket (containerd-shim, X11, D-Bus) is out of reach, with
// the network namespace and, when Git.BuildNetwork shares the host's,
// through Landlock's scope (Linux >= 6.12).
func TestHostAbstractSocketsUnreachable(t *testing.T) {
	e := setup(t)
	probe := e.probe()
	name := fmt.Sprintf("@pkgfleet-test-%d", os.Getpid())
	ln, err := net.Listen("unix", name)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	res, out := e.run([]string{probe, "connect-unix", name})
	if strings.Contains(out, "connect: ok") {
		t.Errorf("reached the host's abstract socket without Network: %+v %s", res, out)
	}
	abi, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 || abi < 6 {
		t.Skipf("Landlock ABI %d < 6 (Linux < 6.12): with Network the host's abstract sockets are reachable", abi)
	}
	res, out = e.run([]string{probe, "connect-unix", name}, func(s *sandbox.Spec) { s.Network = true })
	if strings.Contains(out, "connect: ok") {
		t.Errorf("reached the host's abstract socket with Network despite Landlock ABI %d: %+v %s", abi, res, out)
	}
}

func TestSetuidBinaryGainsNothing(t *testing.T) {
	rootOnly(t)
	e := setup(t)
	probe := e.probe()
	// A root-owned setuid copy in a system dir the sandbox binds.
	dir := filepath.Join("/opt", fmt.Sprintf("pkgfleet-suid-%d", os.Getpid()))
	t.Cleanup(func() { os.RemoveAll(dir) })
	mkdirOpen(t, dir)
	suid := filepath.Join(dir, "probe")
	copyFile(t, probe, suid, 0o755)
	if err := os.Chown(suid, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(suid, 0o4755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	uid, _ := e.r.RunAs()
	res, out := e.run([]string{suid, "euid"})
	if want := fmt.Sprintf("euid=%d uid=%d", uid, uid); !res.Success() || !strings.Contains(out, want) {
		t.Errorf("setuid root binary: %+v %q, want %q", res, out, want)
	}
	// And the host's own setuid helpers do not lift the build either.
	_, out = e.sh("mount -t tmpfs none $TMPDIR && echo MOUNTED; su -c id root </dev/null && echo SU")
	if strings.Contains(out, "MOUNTED") || strings.Contains(out, "SU") {
		t.Errorf("setuid host binary worked: %s", out)
	}
}

func TestOnlyStandardFdsAndNoTTY(t *testing.T) {
	e := setup(t)
	probe := e.probe()
	// cd resolves /proc/self as the shell itself, in either tier's /proc
	// (under masked-proc, /proc/$$ would name another process). No pipe:
	// the shell would hold one end of it while ls looks.
	res, out := e.sh("cd /proc/self/fd && ls")
	if strings.Join(strings.Fields(out), " ") != "0 1 2" {
		t.Errorf("build has fds %q, want 0 1 2 (%+v)", out, res)
	}
	res, out = e.run([]string{probe, "tty"})
	if !strings.Contains(out, "open /dev/tty: ENXIO") {
		t.Errorf("/dev/tty: %+v %s", res, out)
	}
	_, out = e.sh("hostname")
	if strings.TrimSpace(out) != "pkgfleet-build" {
		t.Errorf("hostname %q", out)
	}
}

func TestPlantedSymlinksDoNotEscape(t *testing.T) {
	e := setup(t)
	secret := e.secrets[0]
	// A build plants links in its source tree; a later step follows them.
	res, out := e.sh("ln -s " + secret + " leak && ln -s / rootlink && ln -s ../../../.. up && ln " + secret + " hard; cat leak rootlink" + secret + " up/secret.txt")
	if strings.Contains(out, "TOPSECRET") {
		t.Errorf("planted symlink reached a masked file: %+v\n%s", res, out)
	}
	// A symlink where a bind path should be: the sandbox refuses to start
	// rather than bind its target.
	if err := os.Symlink(e.cfg.DataDir, filepath.Join(e.source, "out")); err != nil {
		t.Fatal(err)
	}
	_, err := e.r.Run(context.Background(), sandbox.Spec{
		Args: []string{"/bin/true"}, Source: e.source, Dest: filepath.Join(e.source, "out"),
	})
	if err == nil || !strings.Contains(err.Error(), "symlink") && !strings.Contains(err.Error(), "too many levels") {
		t.Errorf("bind through a symlink: err = %v, want a refusal", err)
	}
}

func TestExitStatusAndSignalsPassThrough(t *testing.T) {
	e := setup(t)
	for _, c := range []struct {
		script string
		code   int
		sig    string
	}{
		{"exit 0", 0, ""}, {"exit 1", 1, ""}, {"exit 42", 42, ""}, {"exit 255", 255, ""},
		{"kill -SEGV $$", -1, "SIGSEGV"}, {"kill -TERM $$", -1, "SIGTERM"}, {"kill -KILL $$", -1, "SIGKILL"},
		{"kill -ABRT $$", -1, "SIGABRT"},
	} {
		res, out := e.sh(c.script)
		shell := c.code
		if c.sig != "" {
			shell = 128 + int(unix.SignalNum(c.sig))
		}
		if res.ExitStatus() != shell {
			t.Errorf("%q: ExitStatus %d, want %d", c.script, res.ExitStatus(), shell)
		}
		if res.ExitCode != c.code || res.Signal != c.sig || res.Killed != "" {
			t.Errorf("%q: got exit %d signal %q killed %q, want %d %q\n%s", c.script, res.ExitCode, res.Signal, res.Killed, c.code, c.sig, out)
		}
	}
	// A missing program is an error, not an exit status of the build.
	if _, err := e.r.Run(context.Background(), sandbox.Spec{Args: []string{"no-such-program"}, Source: e.source}); err == nil {
		t.Error("missing program: no error")
	}
}

func TestLimitsEndBuildsAndNameTheLimit(t *testing.T) {
	e := setup(t)
	probe := e.probe()
	type tc struct {
		name   string
		argv   []string
		lim    sandbox.Limits
		killed string
	}
	cases := []tc{
		{"fork bomb", []string{"/bin/sh", "-c", "while :; do sleep 1000 & done"},
			sandbox.Limits{Processes: 64, Timeout: 20 * time.Second}, "process limit 64"},
		{"memory bomb", []string{probe, "membomb"},
			sandbox.Limits{Memory: 128 << 20, Timeout: 20 * time.Second}, "memory limit 128MiB"},
		{"disk fill one file", []string{"/bin/sh", "-c", `dd if=/dev/zero of="$TMPDIR/fill" bs=1M count=100`},
			sandbox.Limits{Disk: 8 << 20, Timeout: 20 * time.Second}, "disk limit 8MiB"},
		{"disk fill many files", []string{"/bin/sh", "-c", `i=0; while :; do i=$((i+1)); head -c 1048576 /dev/zero > "$TMPDIR/f$i" || exit 0; done`},
			sandbox.Limits{Disk: 8 << 20, Timeout: 20 * time.Second}, "disk limit 8MiB"},
		// What the disk watch must still see: a directory its owner made
		// unreadable (wx only), and files deeper than PATH_MAX.
		{"disk fill behind an unreadable directory", []string{"/bin/sh", "-c",
			`mkdir "$TMPDIR/h" && chmod 300 "$TMPDIR/h" && for i in $(seq 40); do head -c 1048576 /dev/zero > "$TMPDIR/h/f$i" || exit 0; done; sleep 60`},
			sandbox.Limits{Disk: 8 << 20, Timeout: 20 * time.Second}, "disk limit 8MiB"},
		{"disk fill deeper than PATH_MAX", []string{"/usr/bin/python3", "-c",
			`import os, time
os.chdir(os.environ["TMPDIR"])
for _ in range(30):
    os.mkdir("d" * 200)
    os.chdir("d" * 200)
try:
    for i in range(40):
        with open("f%d" % i, "wb") as f:
            f.write(bytes(1 << 20))
except OSError:
    raise SystemExit(0)
time.sleep(60)`},
			sandbox.Limits{Disk: 8 << 20, Timeout: 20 * time.Second}, "disk limit 8MiB"},
		{"endless loop", []string{"/bin/sh", "-c", "while :; do :; done"},
			sandbox.Limits{Timeout: time.Second}, "timeout 1s"},
	}
	var wg sync.WaitGroup
	results := make([]sandbox.Result, len(cases)+1)
	outs := make([]string, len(cases)+1)
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf safeBuffer
			res, err := e.r.Run(context.Background(), sandbox.Spec{Args: c.argv, Source: e.source, Dest: e.dest,
				Env: []string{"PATH=/usr/bin:/bin"}, Limits: c.lim, Output: &buf})
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			results[i], outs[i] = res, buf.String()
		}()
	}
	// A normal build beside them succeeds.
	wg.Add(1)
	go func() {
		defer wg.Done()
		var buf safeBuffer
		res, err := e.r.Run(context.Background(), sandbox.Spec{
			Args:   []string{"/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo built > " + e.dest + "/ok$i; done; cat " + e.dest + "/ok8"},
			Source: e.source, Dest: e.dest, Limits: sandbox.Limits{Processes: 64, Memory: 128 << 20, Disk: 8 << 20, Timeout: 20 * time.Second},
			Output: &buf,
		})
		if err != nil {
			t.Errorf("normal build: %v", err)
		}
		results[len(cases)], outs[len(cases)] = res, buf.String()
	}()
	wg.Wait()
	for i, c := range cases {
		if results[i].Killed != c.killed || results[i].Success() {
			t.Errorf("%s: result %+v, want killed %q\n%.500s", c.name, results[i], c.killed, outs[i])
		}
	}
	if r := results[len(cases)]; !r.Success() || !strings.Contains(outs[len(cases)], "built") {
		t.Errorf("normal build beside the bombs: %+v %s", r, outs[len(cases)])
	}
}

func TestOutputIsCapped(t *testing.T) {
	e := setup(t)
	var buf safeBuffer
	res, err := e.r.Run(context.Background(), sandbox.Spec{Args: []string{"/bin/sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x"},
		Source: e.source, Output: &buf, Limits: sandbox.Limits{Output: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OutputTruncated || len(buf.String()) != 1000 || !res.Success() {
		t.Errorf("truncated=%v len=%d result %+v", res.OutputTruncated, len(buf.String()), res)
	}
}

func TestNamespaceAccounting(t *testing.T) {
	e := setup(t)
	if sandbox.NamespacesPerBuild != 2 {
		t.Fatal("NamespacesPerBuild != 2")
	}
	max, err := sandbox.MaxUserNamespaces()
	if err != nil || max <= 0 {
		t.Fatalf("MaxUserNamespaces = %d, %v", max, err)
	}
	if e.r.InUse() != 0 {
		t.Errorf("InUse = %d before any build", e.r.InUse())
	}
	// While a build runs it holds two namespaces. The build blocks on its
	// stdin-less read of a FIFO we open only after checking.
	fifo := filepath.Join(e.dest, "fifo")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := e.r.Run(context.Background(), sandbox.Spec{Args: []string{"cat", fifo}, Dest: e.dest})
		done <- err
	}()
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0) // returns once the build has opened it
	if err != nil {
		t.Fatal(err)
	}
	if n := e.r.InUse(); n != 2 {
		t.Errorf("InUse = %d during one build, want 2", n)
	}
	f.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := e.r.InUse(); n != 0 {
		t.Errorf("InUse = %d after the build", n)
	}
	wrapped := fmt.Errorf("x: %w", sandbox.ErrNamespaceLimit)
	if !errors.Is(wrapped, sandbox.ErrNamespaceLimit) || !strings.Contains(sandbox.ErrNamespaceLimit.Error(), "max_user_namespaces") {
		t.Error("ErrNamespaceLimit does not name max_user_namespaces")
	}
}

// TestWorkerDeathKillsSandbox kills a worker process mid-build and checks
// that the build's processes die with it and CleanStale removes its TMPDIR.
func TestWorkerDeathKillsSandbox(t *testing.T) {
	e := setup(t)
	w := e.startWorker(0)
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	_ = w.cmd.Wait()
	for _, pid := range waitGone(t, w.pids, 10*time.Second) {
		t.Errorf("build process %d outlived its worker", pid)
	}
	ws := filepath.Join(e.cfg.TempDir, sandbox.WorkspacesDir)
	before, _ := os.ReadDir(ws)
	if len(before) == 0 {
		t.Fatal("the killed worker left no workspace; the test proves nothing")
	}
	if err := sandbox.CleanStale(e.cfg); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadDir(ws); len(after) != 0 {
		t.Errorf("CleanStale left %v", after)
	}
}

// TestHelperWorkerProcess is the worker process of startWorker: it runs
// one build holding two sleeps and prints how the build ended.
func TestHelperWorkerProcess(t *testing.T) {
	raw := os.Getenv("PKGFLEET_TEST_WORKER")
	if raw == "" {
		t.Skip("only run as the worker of startWorker's tests (a separate worker process)")
	}
	var cfg sandbox.Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	r, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	marker := os.Getenv("PKGFLEET_TEST_MARKER")
	deadMan, _ := time.ParseDuration(os.Getenv("PKGFLEET_TEST_DEADMAN"))
	res, err := r.Run(context.Background(), sandbox.Spec{
		Args:   []string{"/bin/sh", "-c", "sleep " + marker + " & echo started " + marker + "; sleep " + marker},
		Source: os.Getenv("PKGFLEET_TEST_SOURCE"), Output: os.Stdout, DeadMan: deadMan,
	})
	fmt.Printf("ended killed=%q detail=%q err=%v\n", res.Killed, res.Detail, err)
}

// safeBuffer is a bytes.Buffer for output written while tests read it.
type safeBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNamespaceLimitIsReported runs a worker inside a user namespace whose
// max_user_namespaces leaves room for only one of a build's two
// namespaces, and expects ErrNamespaceLimit, not a generic failure.
func TestNamespaceLimitIsReported(t *testing.T) {
	rootOnly(t) // the namespace maps the whole uid range, so the run-as user exists in it
	if !testenv.InUserNamespace(t) {
		return
	}
	e := setup(t)
	testenv.SetMaxUserNamespaces(t, 1)
	_, err := sandbox.New(e.cfg)
	if !errors.Is(err, sandbox.ErrNamespaceLimit) {
		t.Fatalf("New with room for one namespace: %v, want ErrNamespaceLimit", err)
	}
}

// path, can neither list nor read it.
func TestConcurrentBuildTMPDIRIsInvisible(t *testing.T) {
	e := setup(t)
	first, release := e.heldBuild(`echo TOPSECRET > "$TMPDIR/secret" && echo "tmpdir $TMPDIR"`, "tmpdir ", nil)
	res, out := e.sh(`cat ` + first + `/secret; ls -a ` + first + `; ls "$(dirname "$TMPDIR")" | grep -x ` + filepath.Base(first) + ` && echo LISTED`)
	release()
	if strings.Contains(out, "TOPSECRET") || strings.Contains(out, "LISTED") {
		t.Errorf("second build reached the first build's TMPDIR: %+v\n%s", res, out)
	}
}
