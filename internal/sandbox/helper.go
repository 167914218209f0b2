package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The re-exec'd helper (stage B: PID 1, root of user namespace 1) is
// recognised by argv[0] alone. Nothing secret is in argv or the
// environment: builds can read /proc/1/cmdline. Stage C, the build in user
// namespace 2, is a raw clone of the helper (stagec.go), not an exec.
const helperArg0 = "pkgfleet-sandbox-helper"

// initCalled guards New: without Init in main, the re-exec'd helper would
// run the worker (or the whole test suite) again instead of a sandbox.
var initCalled atomic.Bool

// Init must be the first call in main() of any binary that runs sandboxes,
// and in TestMain of any package whose tests do. In a normal process it
// returns at once. In the helper the sandbox re-executed (/proc/self/exe
// with a marker argv[0]) it runs stage B and exits: it sets up the
// namespaces, clones stage C, which drops everything and execs the build
// command, and supervises the build. Settings reach it through an
// inherited pipe.
func Init() {
	if filepath.Base(os.Args[0]) == helperArg0 {
		// exit_group directly: no deferred runtime work (and under -race no
		// one-second atexit sleep) between the report and the namespace's end.
		unix.Exit(helperMain())
	}
	initCalled.Store(true)
}

// helperConfig travels from stage A to stage B over fd 3.
type helperConfig struct {
	Args    []string
	Env     []string
	Dir     string
	Source  string
	Dest    string
	TmpDir  string
	Network bool
	Masks   []string // host paths to cover wherever they are visible

	Memory    int64
	Processes int
	Disk      int64

	UID, GID int  // host ids; the build gets the same numbers in namespace 2
	Tier     Tier // the tier to set up; empty: full if the kernel allows it, else masked-proc
	Probe    bool

	MaxLandlockABI int // 0: the kernel's

	// DeadMan: kill the build when the worker has sent no keepalive for
	// this long (Spec.DeadMan); 0: off.
	DeadMan time.Duration
	// DoorFd > 0: open the build's door (door.go) and send it over this fd.
	DoorFd int
	// keepalives is fd 3 after the settings: the worker's renewals.
	keepalives io.Reader
}

// helperResult travels back from stage B to stage A over fd 4.
type helperResult struct {
	ExitCode       int
	Signal         string
	Killed         string
	Detail         string
	Error          string // set up failed; no build ran
	NamespaceLimit bool   // the nested namespace hit max_user_namespaces
	Tier           Tier   // the tier the build ran in
}

// systemDirs are bound read-only into every sandbox when they exist.
// Everything else of the host (/home, /root, /var, /srv, /run, /tmp, /mnt,
// /media, /boot …) is simply absent.
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"}

func helperMain() int {
	// Non-blocking, so that waiting for settings and keepalives parks a
	// goroutine in the poller instead of holding a thread: every thread the
	// helper starts costs each build's start-up.
	_ = unix.SetNonblock(3, true)
	cfgFile, resFile := os.NewFile(3, "config"), os.NewFile(4, "result")
	var hc helperConfig
	dec := json.NewDecoder(cfgFile)
	err := dec.Decode(&hc)
	// The worker's keepalives follow the settings on the same pipe.
	hc.keepalives = io.MultiReader(dec.Buffered(), cfgFile)
	var res helperResult
	if err != nil {
		res.Error = fmt.Sprintf("read settings: %v", err)
	} else {
		res = runHelper(&hc)
	}
	// Output first, then the report: the worker returns once it has both,
	// without waiting for the namespaces to be torn down.
	os.Stdout.Close()
	os.Stderr.Close()
	_ = json.NewEncoder(resFile).Encode(&res)
	resFile.Close()
	return 0
}

// runHelper is stage B, the sandbox set-up, as one linear sequence. It runs
// as PID 1 of new PID, mount, IPC, UTS (and network) namespaces, as root of
// user namespace 1 with full capabilities there and none on the host.
func runHelper(hc *helperConfig) helperResult {
	// Builds must not ptrace this process or read its /proc files (CVE-2016-9962 class).
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fail("prctl dumpable", err)
	}
	// No signal may end the supervisor early (a build can aim F_SETSIG at it). Ignored:
	// stage C sets every disposition back to the default before the build runs.
	signal.Ignore(unix.SIGHUP, unix.SIGINT, unix.SIGTERM, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2,
		unix.SIGPIPE, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU, unix.SIGALRM, unix.SIGVTALRM, unix.SIGIO)
	// Mounts made below must never propagate back to the host, nor host mounts in.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail("make / private", err)
	}
	// Open the build's directories before anything covers their host paths;
	// a symlink anywhere on the path is refused (planted-link escapes, CVE-2024-42472).
	type exposure struct {
		path string
		fd   int
	}
	var exposures []exposure
	for _, p := range []string{hc.Source, hc.Dest, hc.TmpDir} {
		if p == "" || (len(exposures) > 0 && exposures[len(exposures)-1].path == p) {
			continue
		}
		fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return fail("open "+p+" without following symlinks", err)
		}
		defer unix.Close(fd)
		exposures = append(exposures, exposure{p, fd})
	}
	sort.SliceStable(exposures, func(i, j int) bool { return depth(exposures[i].path) < depth(exposures[j].path) })
	// Builds may create no user namespace beyond the one made for them below (bwrap --disable-userns).
	// A runtime's read-only /proc/sys refuses this (checked below); the seccomp filter
	// still refuses every namespace-creating call.
	nestedLimit := os.WriteFile("/proc/sys/user/max_user_namespaces", []byte("1"), 0)
	// Stage C starts now, blocked until it gets its settings, so that its
	// start-up overlaps the mounts below. pivot_root moves its root along;
	// it checks that before doing anything else.
	build, err := startBuild(hc)
	if err != nil {
		return fail("start build namespace", err)
	}
	// A fresh tmpfs becomes the root: nothing of the host is visible unless bound below.
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=16m"); err != nil {
		return fail("mount root tmpfs", err)
	}
	root, err := unix.Open("/tmp", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open new root", err)
	}
	defer unix.Close(root)
	// System directories, read-only, nosuid and nodev down to every submount.
	for _, d := range systemDirs {
		if err := bindSystemDir(root, d); err != nil {
			return fail("bind "+d, err)
		}
	}
	// Masked directories that lie inside a bound tree get an empty tmpfs over them.
	var masks []int
	for _, m := range hc.Masks {
		fd, err := openBeneath(root, m, false)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			continue // not visible at all, or a link whose target is masked itself
		}
		if err != nil {
			return fail("find mask "+m, err)
		}
		defer unix.Close(fd)
		if err := unix.Mount("tmpfs", fdPath(fd), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
			return fail("mask "+m, err)
		}
		mfd, err := openBeneath(root, m, false)
		if err != nil {
			return fail("reopen mask "+m, err)
		}
		defer unix.Close(mfd)
		masks = append(masks, mfd)
	}
	// The build's own directories, read-write, checked to be the very inodes opened above.
	for _, e := range exposures {
		if err := bindExposure(root, e.path, e.fd); err != nil {
			return fail("bind "+e.path, err)
		}
	}
	// A fresh procfs of the PID namespace, kernel knobs and triggers read-only; or, where a
	// runtime's masks make the kernel refuse one, the existing /proc bound read-only (masked-proc).
	tier, err := setupProc(root, hc.Tier)
	if err != nil {
		return fail("set up /proc", err)
	}
	if nestedLimit != nil && !errors.Is(nestedLimit, unix.EROFS) && !errors.Is(nestedLimit, unix.EACCES) {
		return fail("limit nested user namespaces", nestedLimit)
	}
	// A minimal /dev: a few harmless devices, no host device listing, no ptys.
	if err := setupDev(root); err != nil {
		return fail("set up /dev", err)
	}
	// Masks and the root tmpfs become read-only now that every mount point exists.
	for _, fd := range append(masks, root) {
		if err := setAttr(fd, false, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV); err != nil {
			return fail("make read-only", err)
		}
	}
	// Only loopback, and up, in the private network namespace.
	if !hc.Network {
		if err := loopbackUp(); err != nil {
			return fail("bring up lo", err)
		}
	}
	// With a door, one listener on lo whose accepting end only the worker holds (door.go).
	if hc.DoorFd > 0 {
		if err := openDoor(hc.DoorFd); err != nil {
			return fail("open the door", err)
		}
	}
	// A neutral hostname in the private UTS namespace.
	if err := unix.Sethostname([]byte("pkgfleet-build")); err != nil {
		return fail("sethostname", err)
	}
	// Switch root and detach the old one, so no host path stays reachable.
	if err := unix.Fchdir(root); err != nil {
		return fail("chdir new root", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fail("pivot_root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fail("detach old root", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fail("chdir /", err)
	}
	// Release the build into the finished root, and supervise it.
	res := build.supervise(hc, tier)
	res.Tier = tier
	return res
}

// fail is how a set-up step of stage B fails: the report names the step,
// and says whether the kernel's namespace limit was the cause.
func fail(step string, err error) helperResult {
	return helperResult{Error: fmt.Sprintf("%s: %v", step, err), NamespaceLimit: errors.Is(err, unix.ENOSPC)}
}

// build is stage C as the helper sees it.
type build struct {
	c   *stageC
	pid int
}

// startBuild clones stage C into user namespace 2, mapped back to an
// unprivileged id (stagec.go). It waits for the go-ahead before touching
// anything.
func startBuild(hc *helperConfig) (*build, error) {
	c, err := newStageC(hc)
	if err != nil {
		return nil, err
	}
	pid, err := c.start()
	if err != nil {
		return nil, err
	}
	// One line each: the build's id is an unprivileged id that is root only
	// in the namespace above, which owns all the mounts. Written here, by
	// the visible /proc's number for the child: under a runtime's /proc the
	// PID of our namespace names another process.
	if err := writeIDMaps(pid, hc.UID, hc.GID); err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		_, _ = unix.Wait4(pid, nil, 0, nil)
		return nil, fmt.Errorf("map ids: %w", err)
	}
	return &build{c: c, pid: pid}, nil
}

// writeIDMaps maps uid and gid of the child's user namespace to 0 of ours.
// The child's PID, as the visible /proc numbers it, comes from its pidfd's
// fdinfo, which the kernel renders in the PID namespace of the procfs read.
func writeIDMaps(pid, uid, gid int) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	info, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(pidfd))
	if err != nil {
		return err
	}
	procPid := ""
	for _, line := range strings.Split(string(info), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			procPid = strings.TrimSpace(v)
		}
	}
	if procPid == "" || procPid == "0" || procPid == "-1" {
		return fmt.Errorf("no PID of the build namespace in its pidfd's fdinfo: %q", info)
	}
	dir := "/proc/" + procPid + "/"
	for _, f := range []struct{ name, data string }{
		{"uid_map", strconv.Itoa(uid) + " 0 1\n"},
		{"setgroups", "deny"}, // the build can never drop into, or out of, a group
		{"gid_map", strconv.Itoa(gid) + " 0 1\n"},
	} {
		if err := os.WriteFile(dir+f.name, []byte(f.data), 0); err != nil {
			return err
		}
	}
	return nil
}

// supervise releases stage C into the finished root and stays PID 1: it
// reaps orphans, enforces the limits it can watch, and reports how the
// build's main process ended.
func (b *build) supervise(hc *helperConfig, tier Tier) helperResult {
	path := ""
	if !hc.Probe {
		var err error
		if path, err = lookPath(hc.Args[0], hc.Env); err != nil {
			return fail("find "+hc.Args[0], err)
		}
	}
	// In the masked-proc tier Landlock is what keeps the build out of other
	// processes' /proc entries: no domain, no build.
	if tier == TierMaskedProc && b.c.landlock.abi == 0 {
		return fail("landlock", landlockMissing())
	}
	setupErr := b.c.goAhead(path)

	w := newWatcher(hc, tier)
	stop := make(chan struct{})
	go w.run(stop)
	if hc.DeadMan > 0 {
		go w.deadMan(hc.keepalives, hc.DeadMan, stop)
	}

	var res helperResult
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fail("wait", err)
		}
		if pid != b.pid {
			continue // an orphan re-parented to us
		}
		switch {
		case ws.Signaled():
			res.ExitCode, res.Signal = -1, unixSignalName(ws.Signal())
		default:
			res.ExitCode = ws.ExitStatus()
		}
		break
	}
	close(stop)
	if setupErr != nil {
		return helperResult{Error: setupErr.Error()}
	}
	res.Killed, res.Detail = w.verdict(res)
	if res.Killed != "" {
		res.ExitCode, res.Signal = -1, ""
	}
	// Nothing outlives the main process: kill and reap the rest now, so the
	// output pipe is closed when the worker reads the report.
	_ = unix.Kill(-1, unix.SIGKILL)
	for {
		if _, err := unix.Wait4(-1, nil, 0, nil); err != nil && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	return res
}

// --- set-up steps used by runHelper ---

// bindSystemDir recreates a host system directory inside the new root:
// symlinks as symlinks (merged /usr), directories as recursive read-only
// binds with every submount nosuid and nodev.
func bindSystemDir(root int, dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	name := strings.TrimPrefix(dir, "/")
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		target, err := os.Readlink(dir)
		if err != nil {
			return err
		}
		return unix.Symlinkat(target, root, name)
	case unix.S_IFDIR:
	default:
		return nil
	}
	if err := unix.Mkdirat(root, name, 0o755); err != nil {
		return err
	}
	dst, err := openBeneath(root, dir, false)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	// MS_REC: a non-recursive bind would expose what submounts cover.
	if err := unix.Mount(dir, fdPath(dst), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	mnt, err := openBeneath(root, dir, false)
	if err != nil {
		return err
	}
	defer unix.Close(mnt)
	return setAttr(mnt, true, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
}

// bindExposure binds an already opened host directory at the same path in
// the new root, creating the mount point without following any symlink.
func bindExposure(root int, path string, src int) error {
	dst, err := openBeneath(root, path, true)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	if err := unix.Mount(fdPath(src), fdPath(dst), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	mnt, err := openBeneath(root, path, false)
	if err != nil {
		return err
	}
	defer unix.Close(mnt)
	// The mounted directory must be the inode opened before: no race swapped it.
	var a, b unix.Stat_t
	if err := unix.Fstat(src, &a); err != nil {
		return err
	}
	if err := unix.Fstat(mnt, &b); err != nil {
		return err
	}
	if a.Dev != b.Dev || a.Ino != b.Ino {
		return fmt.Errorf("mounted %s is not the directory opened", path)
	}
	return setAttr(mnt, true, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
}

// setupProc mounts the build's /proc and reports the tier that gave. want
// is "" (the best the kernel allows), TierFull or TierMaskedProc.
func setupProc(root int, want Tier) (Tier, error) {
	if err := unix.Mkdirat(root, "proc", 0o555); err != nil {
		return "", err
	}
	dst, err := openBeneath(root, "/proc", false)
	if err != nil {
		return "", err
	}
	defer unix.Close(dst)
	if want != TierMaskedProc {
		// A fresh procfs of our PID namespace: only the build's processes are in it.
		err := unix.Mount("proc", fdPath(dst), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		if errors.Is(err, unix.EPERM) {
			// The kernel refuses a procfs that would reveal what the runtime's masks
			// cover; some kernels allow one that holds only processes.
			err = unix.Mount("proc", fdPath(dst), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "subset=pid")
		}
		if err == nil {
			return TierFull, coverProcKnobs(root)
		}
		if !errors.Is(err, unix.EPERM) || want == TierFull {
			return "", err
		}
	}
	// masked-proc: the runtime's /proc with its masks (locked, they come along), read-only
	// down to every submount. Other processes' entries are visible; the build's Landlock
	// domain refuses it their environ, memory, fds, root and cwd, and its PID namespace
	// and the seccomp filter any signal or ptrace.
	if err := unix.Mount("/proc", fdPath(dst), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return "", fmt.Errorf("bind the existing /proc: %w", err)
	}
	mnt, err := openBeneath(root, "/proc", false)
	if err != nil {
		return "", err
	}
	defer unix.Close(mnt)
	if err := setAttr(mnt, true, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC); err != nil {
		return "", err
	}
	return TierMaskedProc, nil
}

// coverProcKnobs makes the kernel's knobs and triggers in a fresh procfs read-only.
func coverProcKnobs(root int) error {
	for _, p := range []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"} {
		fd, err := unix.Openat2(root, strings.TrimPrefix(p, "/"), &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS,
		})
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", p, err)
		}
		err = unix.Mount(fdPath(fd), fdPath(fd), "", unix.MS_BIND|unix.MS_REC, "")
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("cover %s: %w", p, err)
		}
		fd, err = unix.Openat2(root, strings.TrimPrefix(p, "/"), &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS,
		})
		if err != nil {
			return fmt.Errorf("reopen %s: %w", p, err)
		}
		err = setAttr(fd, true, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("cover %s: %w", p, err)
		}
	}
	return nil
}

func setupDev(root int) error {
	if err := unix.Mkdirat(root, "dev", 0o755); err != nil {
		return err
	}
	dev, err := openBeneath(root, "/dev", false)
	if err != nil {
		return err
	}
	defer unix.Close(dev)
	if err := unix.Mount("tmpfs", fdPath(dev), "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return err
	}
	unix.Close(dev)
	if dev, err = openBeneath(root, "/dev", false); err != nil {
		return err
	}
	for _, name := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		fd, err := unix.Openat(dev, name, unix.O_CREAT|unix.O_EXCL|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o666)
		if err != nil {
			return err
		}
		unix.Close(fd)
		dst, err := openBeneath(root, "/dev/"+name, false)
		if err != nil {
			return err
		}
		err = unix.Mount("/dev/"+name, fdPath(dst), "", unix.MS_BIND, "")
		unix.Close(dst)
		if err != nil {
			return fmt.Errorf("bind /dev/%s: %w", name, err)
		}
		if dst, err = openBeneath(root, "/dev/"+name, false); err != nil {
			return err
		}
		err = setAttr(dst, false, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC)
		unix.Close(dst)
		if err != nil {
			return fmt.Errorf("bind /dev/%s: %w", name, err)
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := unix.Symlinkat(target, dev, name); err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(dev, "shm", 0o1777); err != nil {
		return err
	}
	shm, err := openBeneath(root, "/dev/shm", false)
	if err != nil {
		return err
	}
	defer unix.Close(shm)
	if err := unix.Mount("tmpfs", fdPath(shm), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=64m"); err != nil {
		return err
	}
	return setAttr(dev, false, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC)
}

// loopbackUp sets IFF_UP on lo, the only interface of a new network namespace.
func loopbackUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr)
}

// openBeneath opens path (absolute, as seen in the new root) below the root
// fd as an O_PATH directory, never following a symlink and never leaving
// the root. With create, missing components are made (0755) one by one.
func openBeneath(root int, path string, create bool) (int, error) {
	rel := strings.TrimPrefix(filepath.Clean(path), "/")
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	if rel == "" {
		return unix.Openat2(root, ".", how)
	}
	if !create {
		return unix.Openat2(root, rel, how)
	}
	dir, err := unix.Openat2(root, ".", how)
	if err != nil {
		return -1, err
	}
	for _, comp := range strings.Split(rel, "/") {
		if err := unix.Mkdirat(dir, comp, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(dir)
			return -1, fmt.Errorf("mkdir %s: %w", comp, err)
		}
		next, err := unix.Openat2(dir, comp, how)
		unix.Close(dir)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", comp, err)
		}
		dir = next
	}
	return dir, nil
}

// setAttr sets mount attributes on the mount at fd (and, recursive, on
// every mount below it). Flags the host locked (noexec, nosuid …) are kept.
func setAttr(fd int, recursive bool, set uint64) error {
	flags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	if err := unix.MountSetattr(fd, "", flags, &unix.MountAttr{Attr_set: set}); err != nil {
		return fmt.Errorf("mount_setattr (Linux >= 5.12): %w", err)
	}
	return nil
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func depth(p string) int { return strings.Count(filepath.Clean(p), "/") }

func sortByDepth(p []string) {
	sort.SliceStable(p, func(i, j int) bool { return depth(p[i]) < depth(p[j]) })
}

// lookPath finds a program the way the build's own environment would.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH", name)
}
