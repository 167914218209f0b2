//go:build linux

package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stage C, the build's own set-up, runs in a raw clone of stage B, not in
// a re-executed binary. Stage B clones it once the new root is in place,
// with CLONE_VM|CLONE_VFORK on a stack of its own (cloneOnStack): no
// address space is copied, and stage B sleeps until stage C has exec'd
// the build (or failed), so the two never run at once in the memory they
// share. Like stage B (stageb.go) it runs in memory of the launcher's Go
// program, so until execve it may only read memory prepared before the
// clone and make raw system calls: every function it runs is go:nosplit
// (no stack growth, and the stack is not a goroutine's) and go:norace (no
// race detector), allocates nothing and writes no pointer. Everything
// stage C needs is therefore laid out in a stageC before the launcher
// clones stage B; stage B writes the new root's identity into want.

// stageC is stage C's plan, read by the child.
type stageC struct {
	// Failure reports to the launcher (step and errno), whose EOF means
	// execve happened; and stage B's fd of the /proc it saw before the new
	// root, where stage C's own id maps are written.
	errW, proc uintptr
	stack      uintptr // the top of the stack stage C runs on

	// One-line id maps of user namespace 2, written by the child itself:
	// its unprivileged id onto stage B's root.
	idFiles [3]idFile // setgroups, uid_map, gid_map, below proc

	slash      [2]byte  // "/"
	dir        []byte   // working directory, NUL-terminated
	argv, envp []*byte  // NULL-terminated
	paths      [][]byte // where execve looks for argv[0], in PATH order
	probe      bool     // stop before execve

	rlimits  []rlimit
	lastCap  uintptr
	capHdr   unix.CapUserHeader
	capNone  [2]unix.CapUserData // 64 capability bits, all clear
	landlock landlockPlan
	sigDfl   kernelSigaction // SIG_DFL, no flags
	sigNone  uint64          // the empty signal mask
	filter   []unix.SockFilter
	fprog    unix.SockFprog

	// Scratch space for the child; want is stage B's.
	want, root unix.Statx_t
	denied     bool      // an execve candidate was refused (EACCES)
	report     [3]uint32 // stage (2), step, errno
}

type rlimit struct {
	resource uintptr
	lim      unix.Rlimit
}

// landlockPlan is the Landlock domain stage C enters (planLandlock's
// choice, landlock.go); abi 0 means none.
type landlockPlan struct {
	abi  int
	attr unix.LandlockRulesetAttr
	rule unix.LandlockPathBeneathAttr // Parent_fd set by the child
}

// kernelSigaction is the kernel's struct sigaction (amd64 and arm64 share
// this layout).
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const atFDCWD = ^uintptr(99) // AT_FDCWD, -100, as a system call argument

// The steps of stage C, as its failure report names them.
const (
	stepSetsid = iota + 1
	stepIDMaps
	stepRootCheck
	stepRlimits
	stepChdir
	stepCloseRange
	stepBoundingSet
	stepAmbient
	stepCapset
	stepNoNewPrivs
	stepLandlock
	stepSignals
	stepSeccomp
	stepExec
)

var stepNames = map[uint32]string{
	stepSetsid: "setsid", stepIDMaps: "map ids", stepRootCheck: "root check",
	stepRlimits: "rlimits", stepChdir: "chdir", stepCloseRange: "close_range", stepBoundingSet: "drop bounding set",
	stepAmbient: "clear ambient capabilities", stepCapset: "capset", stepNoNewPrivs: "no_new_privs",
	stepLandlock: "landlock", stepSignals: "reset signals", stepSeccomp: "seccomp", stepExec: "exec",
}

// hostFacts are what every stage C plan needs of the kernel, read once
// per launcher.
type hostFacts struct {
	filter      []unix.SockFilter // seccompProgram
	lastCap     int               // /proc/sys/kernel/cap_last_cap
	landlockABI int               // landlockABI
	stack       uintptr           // top of stage C's stack (newStack)
}

func readHostFacts() (hostFacts, error) {
	last, err := lastCapability()
	if err != nil {
		return hostFacts{}, fmt.Errorf("cap_last_cap: %w", err)
	}
	abi, _ := landlockABI()
	stack, err := newStack()
	if err != nil {
		return hostFacts{}, fmt.Errorf("stage C's stack: %w", err)
	}
	return hostFacts{filter: seccompProgram(), lastCap: last, landlockABI: abi, stack: stack}, nil
}

// stackSize is stage C's stack: go:nosplit frames, checked by the linker
// to stay within a few hundred bytes, and one system call at a time.
const stackSize = 64 << 10

// newStack maps the launcher's one stage C stack, with an unmapped guard
// page below it. The launcher never touches it: each stage B has its own
// copy of the mapping, and its stage C's writes fault in fresh pages there.
func newStack() (top uintptr, err error) {
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, stackSize+page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_STACK)
	if err != nil {
		return 0, err
	}
	if err := unix.Mprotect(mem[:page], unix.PROT_NONE); err != nil {
		return 0, err
	}
	return uintptr(unsafe.Pointer(&mem[0])) + uintptr(len(mem)), nil
}

// newStageC prepares stage C for hc's build.
// errW is the failure pipe; stage B's plan sets proc.
func newStageC(hc *launchSettings, errW int, host hostFacts) (*stageC, error) {
	c := &stageC{probe: hc.Probe, slash: [2]byte{'/', 0}, filter: host.filter, errW: uintptr(errW), stack: host.stack}
	c.fprog = unix.SockFprog{Len: uint16(len(c.filter)), Filter: &c.filter[0]}
	c.idFiles = [3]idFile{newIDFile("self/setgroups", "deny"),
		newIDFile("self/uid_map", strconv.Itoa(hc.UID)+" 0 1\n"),
		newIDFile("self/gid_map", strconv.Itoa(hc.GID)+" 0 1\n")}
	var err error
	if c.dir, err = cString(hc.Dir); err != nil {
		return nil, err
	}
	if c.argv, err = cStrings(hc.Args); err != nil {
		return nil, err
	}
	if c.envp, err = cStrings(hc.Env); err != nil {
		return nil, err
	}
	if !hc.Probe {
		for _, p := range execCandidates(hc.Args[0], hc.Env) {
			b, err := cString(p)
			if err != nil {
				return nil, err
			}
			c.paths = append(c.paths, b)
		}
	}
	c.rlimits = buildRlimits(hc.Limits)
	c.lastCap = uintptr(host.lastCap)
	c.capHdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	c.landlock = planLandlock(host.landlockABI, hc.MaxLandlockABI)
	return c, nil
}

// execCandidates lists where execve looks for name, the way the build's
// own environment would: name itself when it holds a slash, else each
// directory of its PATH in turn.
func execCandidates(name string, env []string) []string {
	if strings.Contains(name, "/") {
		return []string{name}
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	var out []string
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		out = append(out, dir+"/"+name)
	}
	return out
}

// cloneOnStack is clone(2) with flags whose child runs runStageC(c) on
// the stack whose top is stack (clone_linux_*.s); in the parent it
// returns the child's PID or the clone's errno.
//
//go:noescape
func cloneOnStack(flags, stack uintptr, c *stageC) (pid, errno uintptr)

// runStageC is where cloneOnStack's child starts.
//
//lint:ignore U1000 called from clone_linux_*.s
//go:nosplit
//go:norace
func runStageC(c *stageC) { c.run() }

// run is stage C: an unprivileged id in user namespace 2 with every
// capability there and none above, which removes every privilege and
// becomes the build. One step per line, each failure through fail.
//
//go:nosplit
//go:norace
func (c *stageC) run() {
	// A new session: no controlling terminal to push input into (CVE-2017-5226).
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETSID, 0, 0, 0); e != 0 {
		c.fail(stepSetsid, e)
	}
	// One line each: the build's id is an unprivileged id that is root only
	// in the namespace above, which owns all the mounts; it can never drop
	// into, or out of, a group. Written through the /proc stage B opened
	// before the new root (whose /proc may be read-only), then closed.
	// The kernel lets a process write its own maps only while it is
	// dumpable, and that flag belongs to the memory shared with stage B:
	// set back at once (fail does too); execve decides it anew for the build.
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, unix.PR_SET_DUMPABLE, 1, 0, 0, 0, 0); e != 0 {
		c.fail(stepIDMaps, e)
	}
	for i := range c.idFiles {
		c.writeFile(&c.idFiles[i])
	}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0, 0, 0, 0, 0); e != 0 {
		c.fail(stepIDMaps, e)
	}
	syscall.RawSyscall(syscall.SYS_CLOSE, c.proc, 0, 0)
	// The root must be the new one: stage B cloned this process after pivot_root.
	if _, _, e := syscall.RawSyscall6(unix.SYS_STATX, atFDCWD, uintptr(unsafe.Pointer(&c.slash[0])),
		0, unix.STATX_INO, uintptr(unsafe.Pointer(&c.root)), 0); e != 0 {
		c.fail(stepRootCheck, e)
	}
	if c.root.Ino != c.want.Ino || c.root.Dev_major != c.want.Dev_major || c.root.Dev_minor != c.want.Dev_minor {
		c.fail(stepRootCheck, syscall.EXDEV)
	}
	// Resource limits the kernel enforces per process; the launcher watches the totals.
	for i := range c.rlimits {
		if _, _, e := syscall.RawSyscall6(unix.SYS_PRLIMIT64, 0, c.rlimits[i].resource,
			uintptr(unsafe.Pointer(&c.rlimits[i].lim)), 0, 0, 0); e != 0 {
			c.fail(stepRlimits, e)
		}
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_CHDIR, uintptr(unsafe.Pointer(&c.dir[0])), 0, 0); e != 0 {
		c.fail(stepChdir, e)
	}
	// Only fds 0-2 reach the build: no leaked pipe, socket or directory (CVE-2024-21626 class).
	if _, _, e := syscall.RawSyscall(unix.SYS_CLOSE_RANGE, 3, ^uintptr(0), unix.CLOSE_RANGE_CLOEXEC); e != 0 {
		c.fail(stepCloseRange, e)
	}
	// An empty bounding set: nothing the build execs can regain a capability.
	for cp := uintptr(0); cp <= c.lastCap; cp++ {
		if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, unix.PR_CAPBSET_DROP, cp, 0, 0, 0, 0); e != 0 {
			c.fail(stepBoundingSet, e)
		}
	}
	// No ambient, permitted, effective or inheritable capability either.
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 {
		c.fail(stepAmbient, e)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&c.capHdr)), uintptr(unsafe.Pointer(&c.capNone[0])), 0); e != 0 {
		c.fail(stepCapset, e)
	}
	// setuid and file-capability binaries gain nothing (nosuid mounts too).
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		c.fail(stepNoNewPrivs, e)
	}
	// A Landlock domain of its own: no ptrace-mode access (/proc/<pid>/environ, mem, fd, root,
	// cwd) to any process outside it, and (Linux >= 6.12) no abstract socket or signal beyond it.
	if c.landlock.abi > 0 {
		c.enterLandlock()
	}
	// Every handler back to the default, then no signal blocked: ignored
	// signals would survive execve, and the Go runtime's handlers must never run here.
	for sig := uintptr(1); sig <= 64; sig++ {
		if sig == uintptr(syscall.SIGKILL) || sig == uintptr(syscall.SIGSTOP) {
			continue
		}
		if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, sig, uintptr(unsafe.Pointer(&c.sigDfl)), 0, 8, 0, 0); e != 0 && e != syscall.EINVAL {
			c.fail(stepSignals, e)
		}
	}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&c.sigNone)), 0, 8, 0, 0); e != 0 {
		c.fail(stepSignals, e)
	}
	// The syscall filter, last before execve (seccomp.go).
	if _, _, e := syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&c.fprog))); e != 0 {
		c.fail(stepSeccomp, e)
	}
	if c.probe {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
	}
	// The program, looked up as execvp does: a candidate that is missing
	// or not executable passes the search on to the next.
	for i := range c.paths {
		_, _, e := syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(&c.paths[i][0])),
			uintptr(unsafe.Pointer(&c.argv[0])), uintptr(unsafe.Pointer(&c.envp[0])))
		switch e {
		case syscall.EACCES:
			c.denied = true
		case syscall.ENOENT, syscall.ENOTDIR, syscall.ESTALE, syscall.ENODEV, syscall.ETIMEDOUT:
		default:
			c.fail(stepExec, e)
		}
	}
	if c.denied {
		c.fail(stepExec, syscall.EACCES)
	}
	c.fail(stepExec, syscall.ENOENT)
}

// idFile is one file of the id maps and what to write into it, as
// system call arguments.
type idFile struct {
	path, data, n uintptr
	keep          [2][]byte
}

func newIDFile(path, data string) idFile {
	p, d := append([]byte(path), 0), []byte(data)
	return idFile{path: uintptr(unsafe.Pointer(&p[0])), data: uintptr(unsafe.Pointer(&d[0])), n: uintptr(len(d)), keep: [2][]byte{p, d}}
}

// writeFile writes one id file in one call, or fails the id-map step.
//
//go:nosplit
//go:norace
func (c *stageC) writeFile(f *idFile) {
	fd, _, e := syscall.RawSyscall6(syscall.SYS_OPENAT, c.proc, f.path, unix.O_WRONLY|unix.O_CLOEXEC, 0, 0, 0)
	if e != 0 {
		c.fail(stepIDMaps, e)
	}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_WRITE, fd, f.data, f.n, 0, 0, 0); e != 0 {
		c.fail(stepIDMaps, e)
	}
	syscall.RawSyscall6(syscall.SYS_CLOSE, fd, 0, 0, 0, 0, 0)
}

// enterLandlock creates the planned ruleset, allows "refer" beneath / when
// the ruleset handles file access, and enters it.
//
//go:nosplit
//go:norace
func (c *stageC) enterLandlock() {
	l := &c.landlock
	fd, _, e := syscall.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&l.attr)), unsafe.Sizeof(l.attr), 0)
	if e != 0 {
		c.fail(stepLandlock, e)
	}
	if l.attr.Access_fs != 0 {
		root, _, e := syscall.RawSyscall6(syscall.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(&c.slash[0])),
			unix.O_PATH|unix.O_CLOEXEC, 0, 0, 0)
		if e != 0 {
			c.fail(stepLandlock, e)
		}
		l.rule.Parent_fd = int32(root)
		if _, _, e := syscall.RawSyscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH,
			uintptr(unsafe.Pointer(&l.rule)), 0, 0, 0); e != 0 {
			c.fail(stepLandlock, e)
		}
		syscall.RawSyscall(syscall.SYS_CLOSE, root, 0, 0)
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); e != 0 {
		c.fail(stepLandlock, e)
	}
	syscall.RawSyscall(syscall.SYS_CLOSE, fd, 0, 0)
}

// fail reports the step that failed to the launcher and exits, leaving
// the memory it shares with stage B not dumpable.
//
//go:nosplit
//go:norace
func (c *stageC) fail(step uint32, e syscall.Errno) {
	syscall.RawSyscall6(syscall.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0, 0, 0, 0, 0)
	c.report[0], c.report[1], c.report[2] = 2, step, uint32(e)
	syscall.RawSyscall6(syscall.SYS_WRITE, c.errW, uintptr(unsafe.Pointer(&c.report[0])), 12, 0, 0, 0)
	for {
		syscall.RawSyscall6(syscall.SYS_EXIT_GROUP, 127, 0, 0, 0, 0, 0)
	}
}

// cString is s NUL-terminated, for a system call.
func cString(s string) ([]byte, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, fmt.Errorf("%.40q holds a NUL byte", s)
	}
	return append([]byte(s), 0), nil
}

// cStrings is ss as a NULL-terminated array of C strings (argv, envp).
func cStrings(ss []string) ([]*byte, error) {
	out := make([]*byte, 0, len(ss)+1)
	for _, s := range ss {
		b, err := cString(s)
		if err != nil {
			return nil, err
		}
		out = append(out, &b[0])
	}
	return append(out, nil), nil
}

func lastCapability() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	var n int
	_, err = fmt.Sscanf(string(b), "%d", &n)
	return n, err
}
