//go:build linux

package sandbox

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The re-exec'd launcher (launcher.go) is recognised by argv[0] alone.
// Nothing secret is in argv or the environment: builds can read
// /proc/1/cmdline, and stage B, PID 1 of every build, is a clone of the
// launcher and shows its argv.
const launcherArg0 = "pkgfleet-sandbox-launcher"

// initCalled guards New: without Init in main, the re-exec'd launcher
// would run the worker (or the whole test suite) again instead.
var initCalled atomic.Bool

// Init must be the first call in main() of any binary that runs sandboxes,
// and in TestMain of any package whose tests do. In a normal process it
// returns at once. In the launcher the sandbox re-executed (/proc/self/exe
// with a marker argv[0]) it serves builds until the worker lets it go and
// then exits: for each build it clones stage B, which sets up the
// namespaces and clones stage C, which drops everything and execs the
// build command, and it supervises the build from outside.
func Init() {
	if filepath.Base(os.Args[0]) == launcherArg0 {
		// exit_group directly: no deferred runtime work (and under -race no
		// one-second atexit sleep).
		unix.Exit(launcherMain())
	}
	initCalled.Store(true)
}

// launchSettings travels from stage A to the launcher at the start of each
// build's control socket.
type launchSettings struct {
	Args    []string
	Env     []string
	Dir     string
	Source  string
	Dest    string
	TmpDir  string
	Network bool
	Masks   []string // host paths to cover wherever they are visible

	// Limits travel whole: stage C sets the per-process rlimits from them,
	// the launcher watches Memory, Processes and Disk, and stage A keeps
	// Timeout and Output.
	Limits Limits

	UID, GID int  // host ids; the build gets the same numbers in namespace 2
	Tier     Tier // the tier to set up; empty: full if the kernel allows it, else masked-proc
	Probe    bool

	MaxLandlockABI int // 0: the kernel's

	// DeadMan: kill the build when the worker has sent no keepalive for
	// this long (Spec.DeadMan); 0: off.
	DeadMan time.Duration
	// keepalives is the control socket after the settings: the worker's renewals.
	keepalives io.Reader
}

// launchReport travels back from the launcher to stage A, last on the
// control socket.
type launchReport struct {
	ExitCode       int
	Signal         string
	Killed         string
	Detail         string
	Error          string // set up failed; no build ran
	NamespaceLimit bool   // a namespace clone hit max_user_namespaces
	CloneErrno     int    // the clone of stage B itself was refused with this errno
	Tier           Tier   // the tier the build ran in
}

// systemDirs are bound read-only into every sandbox when they exist.
// Everything else of the host (/home, /root, /var, /srv, /run, /tmp, /mnt,
// /media, /boot …) is simply absent.
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"}

// inherited are the fds stage B gets from the launcher, by their numbers
// there; every other fd of the launcher is closed in stage B first.
type inherited struct {
	out     int // the build's stdout and stderr
	errW    int // failure reports of stages B and C, to the launcher
	statusW int // stage C's wait status, to the launcher
	lifeR   int // EOF once the launcher is gone
	door    int // the door's socket pair (door.go); -1: none
}

func (f inherited) list() []int {
	l := []int{f.out, f.errW, f.statusW, f.lifeR}
	if f.door >= 0 {
		l = append(l, f.door)
	}
	return l
}

// planSandbox is stage B, the sandbox set-up, as one linear sequence of
// system calls, computed in the launcher and run by the clone (stageb.go).
// The clone is PID 1 of new PID, mount, IPC, UTS (and network) namespaces,
// with full capabilities in its new user namespace and none on the host.
// procOpts are the options of a fresh /proc (TierFull).
func planSandbox(hc *launchSettings, c *stageC, f inherited, tier Tier, procOpts string) (*stageB, error) {
	firstSlot := 3
	for _, fd := range f.list() {
		firstSlot = max(firstSlot, fd+1)
	}
	b := newStageB(c, int32(firstSlot))
	b.errW, b.statusW = uintptr(f.errW), uintptr(f.statusW)
	// With the launcher gone nothing may stay: this is PID 1, its death ends every build process.
	b.sys("parent-death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL))
	// Only this build's fds: nothing of the launcher or of its other builds.
	b.closeGaps(f.list())
	b.sys("stdout", unix.SYS_DUP3, uintptr(f.out), 1, 0)
	b.sys("stderr", unix.SYS_DUP3, uintptr(f.out), 2, 0)
	b.close(uintptr(f.out))
	// A launcher that died before the parent-death signal was set leaves EOF here: stop.
	b.sys("launcher gone", unix.SYS_READ, uintptr(f.lifeR), uintptr(unsafe.Pointer(&b.one[0])), 1).allow(0, unix.EAGAIN).data = true
	// No Go handler may run here; as PID 1 with default dispositions no signal from inside
	// the namespace reaches this process (a build can aim F_SETSIG at it), only SIGKILL from outside.
	for sig := uintptr(1); sig <= 64; sig++ {
		if sig != uintptr(unix.SIGKILL) && sig != uintptr(unix.SIGSTOP) {
			b.sys("reset signals", unix.SYS_RT_SIGACTION, sig, uintptr(unsafe.Pointer(&b.sigDfl)), 0, 8).allow(0, unix.EINVAL)
		}
	}
	// Root of user namespace 1 is the launcher's unprivileged id and nothing else; no setgroups.
	// (Written by this process itself, which the kernel allows only while it is dumpable.)
	b.sys("prctl dumpable", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 1)
	b.writeFile("map sandbox ids", "/proc/self/setgroups", "deny")
	b.writeFile("map sandbox ids", "/proc/self/uid_map", "0 "+strconv.Itoa(hc.UID)+" 1\n")
	b.writeFile("map sandbox ids", "/proc/self/gid_map", "0 "+strconv.Itoa(hc.GID)+" 1\n")
	// Builds must not ptrace this process or read its /proc files (CVE-2016-9962 class).
	b.sys("prctl dumpable", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0)
	// Stage C writes its own id maps through this /proc, which the new root's may not allow
	// (a read-only bind in the masked-proc tier); it is closed before the build runs.
	how, size := b.how(howHost)
	c.proc = b.slot()
	b.sys("open /proc", unix.SYS_OPENAT2, atFDCWD, b.str("/proc"), how, size).into(c.proc)
	// Mounts made below must never propagate back to the host, nor host mounts in.
	b.mount("make / private", "", b.str("/"), "", unix.MS_REC|unix.MS_PRIVATE, "")
	// Open the build's directories before anything covers their host paths;
	// a symlink anywhere on the path is refused (planted-link escapes, CVE-2024-42472).
	type exposure struct {
		path string
		fd   uintptr
	}
	var exposures []exposure
	for _, p := range []string{hc.Source, hc.Dest, hc.TmpDir} {
		if p == "" || (len(exposures) > 0 && exposures[len(exposures)-1].path == p) {
			continue
		}
		fd := b.slot()
		b.sys("open "+p+" without following symlinks", unix.SYS_OPENAT2, atFDCWD, b.str(p), how, size).into(fd)
		exposures = append(exposures, exposure{p, fd})
	}
	sort.SliceStable(exposures, func(i, j int) bool { return depth(exposures[i].path) < depth(exposures[j].path) })
	// Builds may create no user namespace beyond the one made for them below (bwrap --disable-userns).
	// A runtime's read-only /proc/sys refuses this; the seccomp filter still refuses every
	// namespace-creating call.
	nested := b.slot()
	b.sys("limit nested user namespaces", unix.SYS_OPENAT, atFDCWD, b.str("/proc/sys/user/max_user_namespaces"),
		unix.O_WRONLY|unix.O_CLOEXEC).into(nested).allow(2, unix.EROFS, unix.EACCES)
	b.sys("limit nested user namespaces", unix.SYS_WRITE, nested, b.str("1"), 1)
	b.close(nested)
	// A fresh tmpfs becomes the root: nothing of the host is visible unless bound below.
	b.mount("mount root tmpfs", "tmpfs", b.str("/tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=16m")
	root := b.slot()
	b.sys("open new root", unix.SYS_OPENAT, atFDCWD, b.str("/tmp"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC).into(root)
	// System directories, read-only, nosuid and nodev down to every submount; symlinks stay symlinks (merged /usr).
	for _, d := range systemDirs {
		if err := b.bindSystemDir(root, d); err != nil {
			return nil, err
		}
	}
	// Masked directories that lie inside a bound tree get an empty tmpfs over them.
	var masks []uintptr
	for _, m := range hc.Masks {
		step := "mask " + m
		// Not visible at all, or a link whose target is masked itself: nothing to cover.
		fd, _ := b.openBeneath("find mask "+m, root, m, false)
		b.ops[len(b.ops)-1].allow(2, unix.ENOENT, unix.ELOOP, unix.ENOTDIR)
		b.mount(step, "tmpfs", b.fdPath(fd), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=64k")
		how, size := b.how(howBeneath)
		b.sys("reopen mask "+m, unix.SYS_OPENAT2, root, b.str(strings.TrimPrefix(filepath.Clean(m), "/")), how, size).into(fd)
		masks = append(masks, fd)
	}
	// The build's own directories, read-write, checked to be the very inodes opened above.
	for _, e := range exposures {
		b.bindExposure(root, e.path, e.fd)
	}
	// A fresh procfs of the PID namespace, kernel knobs and triggers read-only; or, where a
	// runtime's masks make the kernel refuse one, the existing /proc bound read-only (masked-proc).
	b.setupProc(root, tier, procOpts)
	// A minimal /dev: a few harmless devices, no host device listing, no ptys.
	b.setupDev(root)
	// Masks and the root tmpfs become read-only now that every mount point exists
	// (a mask that was skipped above has no fd: EBADF).
	for _, fd := range masks {
		b.setAttr("make read-only", fd, false, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV).allow(0, unix.EBADF)
	}
	b.setAttr("make read-only", root, false, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	// Only loopback, and up, in the private network namespace.
	if !hc.Network {
		b.loopbackUp()
	}
	// With a door, one listener on lo whose accepting end only the worker holds (door.go).
	if f.door >= 0 {
		b.openDoor(uintptr(f.door))
	}
	// A neutral hostname in the private UTS namespace.
	b.sys("sethostname", unix.SYS_SETHOSTNAME, b.str("pkgfleet-build"), uintptr(len("pkgfleet-build")))
	// Switch root and detach the old one, so no host path stays reachable.
	b.sys("chdir new root", unix.SYS_FCHDIR, root)
	b.sys("pivot_root", unix.SYS_PIVOT_ROOT, b.str("."), b.str("."))
	b.sys("detach old root", unix.SYS_UMOUNT2, b.str("."), unix.MNT_DETACH)
	b.sys("chdir /", unix.SYS_CHDIR, b.str("/"))
	// Stage C starts in the finished root, in user namespace 2, and checks the root is this
	// one; this process sleeps until it has exec'd the build (or failed), and the failure
	// pipe's EOF then tells the launcher so.
	b.sys("stat new root", unix.SYS_STATX, atFDCWD, b.str("/"), 0, unix.STATX_INO, uintptr(unsafe.Pointer(&c.want)))
	b.special("start build namespace", opCloneC)
	b.close(c.proc)
	b.close(uintptr(f.errW))
	return b, b.err
}

// --- set-up steps used by planSandbox ---

// bindSystemDir recreates a host system directory inside the new root:
// symlinks as symlinks (merged /usr), directories as recursive read-only
// binds with every submount nosuid and nodev. The host's system
// directories are read here, in the launcher: no build can change them.
func (b *stageB) bindSystemDir(root uintptr, dir string) error {
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
		b.sys("bind "+dir, unix.SYS_SYMLINKAT, b.str(target), root, b.str(name))
		return nil
	case unix.S_IFDIR:
	default:
		return nil
	}
	step := "bind " + dir
	b.sys(step, unix.SYS_MKDIRAT, root, b.str(name), 0o755)
	dst, _ := b.openBeneath(step, root, dir, false)
	// MS_REC: a non-recursive bind would expose what submounts cover.
	b.mount(step, dir, b.fdPath(dst), "", unix.MS_BIND|unix.MS_REC, "")
	mnt, _ := b.openBeneath(step, root, dir, false)
	b.setAttr(step, mnt, true, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	b.close(dst)
	b.close(mnt)
	return nil
}

// bindExposure binds an already opened host directory at the same path in
// the new root, creating the mount point without following any symlink,
// and checks that the mounted directory is the inode opened: no race swapped it.
func (b *stageB) bindExposure(root uintptr, path string, src uintptr) {
	step := "bind " + path
	dst, _ := b.openBeneath(step, root, path, true)
	b.sys(step, unix.SYS_MOUNT, b.fdPath(src), b.fdPath(dst), 0, unix.MS_BIND|unix.MS_REC, 0)
	mnt, _ := b.openBeneath(step, root, path, false)
	b.sys(step, unix.SYS_STATX, src, b.str(""), unix.AT_EMPTY_PATH, unix.STATX_INO, uintptr(unsafe.Pointer(&b.stat[0])))
	b.sys(step, unix.SYS_STATX, mnt, b.str(""), unix.AT_EMPTY_PATH, unix.STATX_INO, uintptr(unsafe.Pointer(&b.stat[1])))
	b.special("mounted "+path+" is not the directory opened", opSameInode)
	b.setAttr(step, mnt, true, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	b.close(dst)
	b.close(mnt)
}

// setupProc mounts the build's /proc for tier: a fresh procfs of the PID
// namespace with procOpts (TierFull), or the existing /proc with its
// masks, read-only down to every submount (TierMaskedProc). Other
// processes' entries are visible there; the build's Landlock domain
// refuses it their environ, memory, fds, root and cwd, and its PID
// namespace and the seccomp filter any signal or ptrace.
func (b *stageB) setupProc(root uintptr, tier Tier, procOpts string) {
	b.sys("set up /proc", unix.SYS_MKDIRAT, root, b.str("proc"), 0o555)
	dst, _ := b.openBeneath("set up /proc", root, "/proc", false)
	if tier == TierMaskedProc {
		b.mount("bind the existing /proc", "/proc", b.fdPath(dst), "", unix.MS_BIND|unix.MS_REC, "")
		mnt, _ := b.openBeneath("set up /proc", root, "/proc", false)
		b.setAttr("set up /proc", mnt, true, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
		b.close(mnt)
		b.close(dst)
		return
	}
	b.mount(stepMountProc, "proc", b.fdPath(dst), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, procOpts)
	b.close(dst)
	// The kernel's knobs and triggers in it, read-only.
	for _, p := range []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"} {
		step := "cover " + p
		fd := b.slot()
		how, size := b.how(howKnob)
		rel := b.str(strings.TrimPrefix(p, "/"))
		b.sys(step, unix.SYS_OPENAT2, root, rel, how, size).into(fd).allow(4, unix.ENOENT)
		b.sys(step, unix.SYS_MOUNT, b.fdPath(fd), b.fdPath(fd), 0, unix.MS_BIND|unix.MS_REC, 0)
		b.sys(step, unix.SYS_OPENAT2, root, rel, how, size).into(fd)
		b.setAttr(step, fd, true, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
		b.close(fd)
	}
}

// stepMountProc names the fresh procfs's mount, which the kernel refuses
// under a runtime's masked /proc (the launcher then tries the next tier).
const stepMountProc = "mount proc"

func (b *stageB) setupDev(root uintptr) {
	const step = "set up /dev"
	b.sys(step, unix.SYS_MKDIRAT, root, b.str("dev"), 0o755)
	dev, _ := b.openBeneath(step, root, "/dev", false)
	b.mount(step, "tmpfs", b.fdPath(dev), "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k")
	how, size := b.how(howBeneath)
	b.sys(step, unix.SYS_OPENAT2, root, b.str("dev"), how, size).into(dev)
	tmp := b.slot()
	for _, name := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		step := "bind /dev/" + name
		b.sys(step, unix.SYS_OPENAT, dev, b.str(name), unix.O_CREAT|unix.O_EXCL|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o666).into(tmp)
		b.close(tmp)
		b.sys(step, unix.SYS_OPENAT2, root, b.str("dev/"+name), how, size).into(tmp)
		b.mount(step, "/dev/"+name, b.fdPath(tmp), "", unix.MS_BIND, "")
		b.sys(step, unix.SYS_OPENAT2, root, b.str("dev/"+name), how, size).into(tmp)
		b.setAttr(step, tmp, false, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC)
		b.close(tmp)
	}
	for _, l := range [][2]string{{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"},
		{"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}} {
		b.sys(step, unix.SYS_SYMLINKAT, b.str(l[1]), dev, b.str(l[0]))
	}
	b.sys(step, unix.SYS_MKDIRAT, dev, b.str("shm"), 0o1777)
	b.sys(step, unix.SYS_OPENAT2, root, b.str("dev/shm"), how, size).into(tmp)
	b.mount(step, "tmpfs", b.fdPath(tmp), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=64m")
	b.close(tmp)
	b.setAttr(step, dev, false, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC)
	b.close(dev)
}

// loopbackUp sets IFF_UP on lo, the only interface of a new network namespace.
func (b *stageB) loopbackUp() {
	const step = "bring up lo"
	copy(b.ifr.b[:], "lo")
	s := b.slot()
	b.sys(step, unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0).into(s)
	b.sys(step, unix.SYS_IOCTL, s, unix.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&b.ifr)))
	b.special(step, opIfUp)
	b.sys(step, unix.SYS_IOCTL, s, unix.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&b.ifr)))
	b.close(s)
}

// openDoor listens on DoorAddr in the build's network namespace and hands
// the socket to the worker over doorFd, keeping no copy.
func (b *stageB) openDoor(doorFd uintptr) {
	const step = "open the door"
	s := b.slot()
	b.addr = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	b.addr.Port = doorPort>>8 | (doorPort&0xff)<<8 // network byte order
	b.cmsg = unix.UnixRights(int(s))
	b.iov = unix.Iovec{Base: &b.one[0]}
	b.iov.SetLen(1)
	b.msg = unix.Msghdr{Iov: &b.iov, Control: &b.cmsg[0]}
	b.msg.Iovlen = 1
	b.msg.SetControllen(len(b.cmsg))
	b.sys(step, unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0).into(s)
	b.sys("bind "+DoorAddr, unix.SYS_BIND, s, uintptr(unsafe.Pointer(&b.addr)), unix.SizeofSockaddrInet4)
	b.sys(step, unix.SYS_LISTEN, s, 64)
	b.sys(step, unix.SYS_SENDMSG, doorFd, uintptr(unsafe.Pointer(&b.msg)), unix.MSG_NOSIGNAL)
	b.close(doorFd)
	b.close(s)
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func depth(p string) int { return strings.Count(filepath.Clean(p), "/") }

func sortByDepth(p []string) {
	sort.SliceStable(p, func(i, j int) bool { return depth(p[i]) < depth(p[j]) })
}
