package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stage C, the build's own set-up, runs in a raw clone of the helper, not
// in a re-executed binary: no second Go runtime starts per build. The
// child of a raw clone is a copy of one thread of a Go program, so until
// execve it may only read memory prepared before the clone and make raw
// system calls: every function it runs is go:nosplit (no stack growth)
// and go:norace (no race detector), allocates nothing and writes no
// pointer. Everything stage C needs is therefore laid out in a stageC
// before the clone; what the helper learns after it (the new root and the
// program's path there) comes through the go-ahead pipe.

// stageC is stage C's plan, read by the child.
type stageC struct {
	// Pipes from the helper to the child and back, the child's ends and
	// the helper's: the go-ahead, after pivot_root; a failure report (step
	// and errno), whose EOF means execve happened.
	goR, goW   int
	errR, errW int

	// The go-ahead: the new root's inode and device (to check pivot_root
	// moved the child along), then the program's path, NUL-terminated.
	msg [pipeBuf]byte

	slash      [2]byte // "/"
	dir        []byte  // working directory, NUL-terminated
	argv, envp []*byte // NULL-terminated
	probe      bool    // stop before execve

	rlimits  []rlimit
	lastCap  uintptr
	capHdr   unix.CapUserHeader
	capNone  [2]unix.CapUserData // 64 capability bits, all clear
	landlock landlockPlan
	sigDfl   kernelSigaction // SIG_DFL, no flags
	sigNone  uint64          // the empty signal mask
	sigAll   uint64          // every signal
	sigSaved uint64          // the cloning thread's mask, restored after the clone
	filter   []unix.SockFilter
	fprog    unix.SockFprog

	// Scratch space for the child.
	root   unix.Statx_t
	report [2]uint32 // step, errno
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

const (
	pipeBuf = 4096         // PIPE_BUF: a write this size is atomic
	atFDCWD = ^uintptr(99) // AT_FDCWD, -100, as a system call argument
)

// The steps of stage C, as its failure report names them.
const (
	stepSetsid = iota + 1
	stepGoAhead
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
	stepSetsid: "setsid", stepGoAhead: "read settings", stepRootCheck: "root check", stepRlimits: "rlimits",
	stepChdir: "chdir", stepCloseRange: "close_range", stepBoundingSet: "drop bounding set",
	stepAmbient: "clear ambient capabilities", stepCapset: "capset", stepNoNewPrivs: "no_new_privs",
	stepLandlock: "landlock", stepSignals: "reset signals", stepSeccomp: "seccomp", stepExec: "exec",
}

// newStageC prepares stage C for hc's build.
func newStageC(hc *helperConfig) (*stageC, error) {
	c := &stageC{probe: hc.Probe, slash: [2]byte{'/', 0}, sigAll: ^uint64(0), filter: seccompProgram()}
	c.fprog = unix.SockFprog{Len: uint16(len(c.filter)), Filter: &c.filter[0]}
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
	c.rlimits = buildRlimits(Limits{Memory: hc.Memory, Processes: hc.Processes, Disk: hc.Disk})
	last, err := lastCapability()
	if err != nil {
		return nil, fmt.Errorf("cap_last_cap: %w", err)
	}
	c.lastCap = uintptr(last)
	c.capHdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	c.landlock = planLandlock(hc.MaxLandlockABI)
	return c, nil
}

// start clones stage C into a new user namespace.
func (c *stageC) start() (pid int, err error) {
	goR, goW, err := pipe()
	if err != nil {
		return 0, err
	}
	errR, errW, err := pipe()
	if err != nil {
		unix.Close(goR)
		unix.Close(goW)
		return 0, err
	}
	c.goR, c.goW, c.errR, c.errW = goR, goW, errR, errW
	r, errno := rawClone(c)
	unix.Close(goR)
	unix.Close(errW)
	if errno != 0 {
		unix.Close(goW)
		unix.Close(errR)
		return 0, errno
	}
	return r, nil
}

// goAhead releases stage C into the finished root: it checks that / is
// the root the helper built, and execs path. It returns the error stage C
// reported, or nil once the build's program runs.
func (c *stageC) goAhead(path string) error {
	// Closed on every path: EOF releases a waiting child to fail and exit.
	defer unix.Close(c.goW)
	defer func() {
		if c.errR >= 0 {
			unix.Close(c.errR)
		}
	}()
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, "/", 0, unix.STATX_INO, &st); err != nil {
		return fmt.Errorf("stat new root: %w", err)
	}
	msg := make([]byte, 16, 16+len(path)+1)
	binary.NativeEndian.PutUint64(msg[0:], st.Ino)
	binary.NativeEndian.PutUint32(msg[8:], st.Dev_major)
	binary.NativeEndian.PutUint32(msg[12:], st.Dev_minor)
	msg = append(append(msg, path...), 0)
	if len(msg) > len(c.msg) || strings.IndexByte(path, 0) >= 0 {
		return fmt.Errorf("program path %.40q… is too long or holds a NUL", path)
	}
	// One write of at most PIPE_BUF bytes: the child reads it whole.
	if _, err := unix.Write(c.goW, msg); err != nil {
		return fmt.Errorf("release the build: %w", err)
	}
	// Waited for in the poller, not in a blocking read (see helperMain).
	_ = unix.SetNonblock(c.errR, true)
	errR := os.NewFile(uintptr(c.errR), "stage C report")
	c.errR = -1 // errR owns it now
	defer errR.Close()
	var report [8]byte
	n, err := io.ReadFull(errR, report[:])
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	switch {
	case err != nil:
		return fmt.Errorf("read stage C's report: %w", err)
	case n == 0:
		return nil // EOF: the pipe closed on execve (or the probe's exit)
	case n < len(report):
		return errors.New("stage C ended with a partial report")
	}
	step, errno := binary.NativeEndian.Uint32(report[0:]), syscall.Errno(binary.NativeEndian.Uint32(report[4:]))
	name := stepNames[step]
	switch step {
	case stepExec:
		name += " " + path
	case stepChdir:
		name += " " + string(c.dir[:len(c.dir)-1])
	case stepRootCheck:
		return errors.New("root check: / is not the sandbox root")
	}
	return fmt.Errorf("%s: %w", name, errno)
}

// rawClone forks the calling thread into a new user namespace and runs
// stage C in the child. In the parent it returns the child's PID.
//
// Every signal is blocked from before the clone until the child has reset
// every handler to the default: no Go handler may run in the child. The
// goroutine cannot change threads in between, as a nosplit function
// without a blocking call has no point where it could be rescheduled, and
// the preemption signal is blocked too.
//
//go:nosplit
//go:norace
func rawClone(c *stageC) (int, syscall.Errno) {
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&c.sigAll)),
		uintptr(unsafe.Pointer(&c.sigSaved)), 8, 0, 0)
	r, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.CLONE_NEWUSER|syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if errno != 0 || r != 0 {
		syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&c.sigSaved)), 0, 8, 0, 0)
		return int(r), errno
	}
	c.run()
	return 0, 0 // not reached
}

// run is stage C: an unprivileged id in user namespace 2 with every
// capability there and none above, which removes every privilege and
// becomes the build. One step per line, each failure through fail.
//
//go:nosplit
//go:norace
func (c *stageC) run() {
	// The helper's ends of the pipes: its closing the go-ahead must be seen as EOF.
	syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(c.goW), 0, 0)
	syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(c.errR), 0, 0)
	// A new session: no controlling terminal to push input into (CVE-2017-5226).
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETSID, 0, 0, 0); e != 0 {
		c.fail(stepSetsid, e)
	}
	// Nothing happens before the helper's go-ahead, which comes after pivot_root.
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(c.goR), uintptr(unsafe.Pointer(&c.msg[0])), uintptr(len(c.msg)))
	if e != 0 || n <= 16 {
		c.fail(stepGoAhead, e)
	}
	// The root must now be the new one: pivot_root moved this process along.
	if _, _, e := syscall.RawSyscall6(unix.SYS_STATX, atFDCWD, uintptr(unsafe.Pointer(&c.slash[0])),
		0, unix.STATX_INO, uintptr(unsafe.Pointer(&c.root)), 0); e != 0 {
		c.fail(stepRootCheck, e)
	}
	if c.root.Ino != *(*uint64)(unsafe.Pointer(&c.msg[0])) || c.root.Dev_major != *(*uint32)(unsafe.Pointer(&c.msg[8])) ||
		c.root.Dev_minor != *(*uint32)(unsafe.Pointer(&c.msg[12])) {
		c.fail(stepRootCheck, syscall.EXDEV)
	}
	// Resource limits the kernel enforces per process; the helper watches the totals.
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
	// signals would survive execve (a worker started with SIGHUP ignored
	// must not hand that on), and the Go runtime's handlers must never run here.
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
	_, _, e = syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(&c.msg[16])),
		uintptr(unsafe.Pointer(&c.argv[0])), uintptr(unsafe.Pointer(&c.envp[0])))
	c.fail(stepExec, e)
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

// fail reports the step that failed to the helper and exits.
//
//go:nosplit
//go:norace
func (c *stageC) fail(step uint32, e syscall.Errno) {
	c.report[0], c.report[1] = step, uint32(e)
	syscall.RawSyscall(syscall.SYS_WRITE, uintptr(c.errW), uintptr(unsafe.Pointer(&c.report[0])), 8)
	for {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 127, 0, 0)
	}
}

// pipe returns a close-on-exec pipe as raw fds.
func pipe() (r, w int, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return -1, -1, err
	}
	return p[0], p[1], nil
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
