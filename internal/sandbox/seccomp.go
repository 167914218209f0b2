//go:build linux

package sandbox

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The seccomp filter is a denylist: builds compile and run arbitrary
// toolchains, so an allowlist would break them, while everything denied
// here is something no build needs and that widens the kernel surface or
// could undo the namespace set-up. Denied calls fail with EPERM, except
// clone3 and the new mount API which fail with ENOSYS so that libc and
// util-linux fall back to the calls that fail with EPERM.

// seccomp_data offsets (linux/seccomp.h).
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16 // args[i] at 16+8*i; the low 32 bits first on little-endian
)

// deniedSyscalls fail with EPERM.
var deniedSyscalls = []uint32{
	// Mount table and root changes: the masks must stay.
	unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_CHROOT,
	// Namespaces: no joining, no new ones (clone is checked by flag below).
	unix.SYS_SETNS, unix.SYS_UNSHARE,
	// Kernel keyrings are not namespaced.
	unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	// File handles name any inode of a mount, beyond the masks and the
	// binds (the "shocker" escape); Docker's default profile denies it too.
	unix.SYS_OPEN_BY_HANDLE_AT,
	// Tracing and kernel-programming interfaces.
	unix.SYS_PTRACE, unix.SYS_PERF_EVENT_OPEN, unix.SYS_BPF, unix.SYS_USERFAULTFD,
	// io_uring submits work seccomp never sees.
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
	// Host administration (flatpak's list).
	unix.SYS_SYSLOG, unix.SYS_ACCT, unix.SYS_QUOTACTL, unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD,
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE, unix.SYS_REBOOT,
	unix.SYS_SWAPON, unix.SYS_SWAPOFF,
	// NUMA placement across the host.
	unix.SYS_MOVE_PAGES, unix.SYS_MBIND, unix.SYS_SET_MEMPOLICY, unix.SYS_MIGRATE_PAGES,
}

// enosysSyscalls fail with ENOSYS.
var enosysSyscalls = []uint32{
	unix.SYS_CLONE3, // its flags live in memory the filter cannot read (CVE-2021-41133)
	unix.SYS_OPEN_TREE, unix.SYS_MOVE_MOUNT, unix.SYS_FSOPEN, unix.SYS_FSCONFIG,
	unix.SYS_FSMOUNT, unix.SYS_FSPICK, unix.SYS_MOUNT_SETATTR, unix.SYS_OPEN_TREE_ATTR,
}

// signalSyscalls may not target PID 1, stage B, whose death would end
// the build with a misleading report.
var signalSyscalls = []uint32{
	unix.SYS_KILL, unix.SYS_TKILL, unix.SYS_TGKILL, unix.SYS_RT_SIGQUEUEINFO,
	unix.SYS_RT_TGSIGQUEUEINFO, unix.SYS_PIDFD_OPEN,
}

const cloneNamespaceFlags = unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID |
	unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

// seccompProgram assembles the filter: the architecture check, one
// compare per listed syscall, and the blocks they jump to. Every jump
// names a label; the assembler (bpfasm below) computes the offsets.
func seccompProgram() []unix.SockFilter {
	var a bpfasm
	// A foreign ABI (i386 on x86-64) has other numbers: kill.
	a.load(offArch)
	a.jeq(auditArch, "", "kill")
	a.load(offNr)
	if x32Bit != 0 {
		a.jge(x32Bit, "kill", "")
	}
	for _, nr := range deniedSyscalls {
		a.jeq(nr, "eperm", "")
	}
	for _, nr := range enosysSyscalls {
		a.jeq(nr, "enosys", "")
	}
	for _, nr := range signalSyscalls {
		a.jeq(nr, "pid1", "")
	}
	a.jeq(unix.SYS_CLONE, "clone", "")
	a.jeq(unix.SYS_IOCTL, "ioctl", "")
	a.jeq(unix.SYS_SOCKET, "socket", "")
	a.ja("allow")

	// clone: namespace flags in the low word of arg0.
	a.label("clone")
	a.load(offArg0)
	a.jset(cloneNamespaceFlags, "eperm", "allow")
	// ioctl: TIOCSTI and TIOCLINUX compared on the low 32 bits of arg1,
	// as the kernel does (CVE-2019-10063, CVE-2023-28100).
	a.label("ioctl")
	a.load(offArg0 + 8)
	a.jeq(unix.TIOCSTI, "eperm", "")
	a.jeq(unix.TIOCLINUX, "eperm", "allow")
	// socket: only the families builds use (flatpak's list); the exotic
	// ones carry most of the unprivileged kernel attack surface.
	a.label("socket")
	a.load(offArg0)
	for _, af := range []uint32{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK} {
		a.jeq(af, "allow", "")
	}
	a.ret(unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT))
	// Signals to pid 1 (low word; pid_t is 32 bits).
	a.label("pid1")
	a.load(offArg0)
	a.jeq(1, "eperm", "allow")
	// The verdicts, last: BPF jumps only forward.
	a.label("eperm")
	a.ret(unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM))
	a.label("enosys")
	a.ret(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
	a.label("allow")
	a.ret(unix.SECCOMP_RET_ALLOW)
	a.label("kill")
	a.ret(unix.SECCOMP_RET_KILL_PROCESS)

	prog, err := a.assemble()
	if err != nil {
		panic("seccomp program: " + err.Error()) // a bug in the lines above, caught by seccomp_test.go
	}
	return prog
}

// bpfasm assembles a classic BPF program whose jumps go forward to named
// labels. A jump target "" is the next instruction.
type bpfasm struct {
	prog   []unix.SockFilter
	labels map[string]int
	jumps  []bpfJump
}

// bpfJump is a jump whose offsets assemble fills in.
type bpfJump struct {
	at     int
	jt, jf string // conditional targets; jt alone for ja
}

func (a *bpfasm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

func (a *bpfasm) emit(code uint16, k uint32) {
	a.prog = append(a.prog, unix.SockFilter{Code: code, K: k})
}

// load loads the 32-bit word of seccomp_data at off into A.
func (a *bpfasm) load(off uint32) { a.emit(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off) }

func (a *bpfasm) ret(k uint32) { a.emit(unix.BPF_RET|unix.BPF_K, k) }

func (a *bpfasm) cond(op uint16, k uint32, jt, jf string) {
	a.jumps = append(a.jumps, bpfJump{at: len(a.prog), jt: jt, jf: jf})
	a.emit(unix.BPF_JMP|op|unix.BPF_K, k)
}

// jeq jumps to jt if A == k, else to jf.
func (a *bpfasm) jeq(k uint32, jt, jf string) { a.cond(unix.BPF_JEQ, k, jt, jf) }

// jge jumps to jt if A >= k, else to jf.
func (a *bpfasm) jge(k uint32, jt, jf string) { a.cond(unix.BPF_JGE, k, jt, jf) }

// jset jumps to jt if A & k != 0, else to jf.
func (a *bpfasm) jset(k uint32, jt, jf string) { a.cond(unix.BPF_JSET, k, jt, jf) }

// ja jumps to target unconditionally.
func (a *bpfasm) ja(target string) {
	a.jumps = append(a.jumps, bpfJump{at: len(a.prog), jt: target})
	a.emit(unix.BPF_JMP|unix.BPF_JA, 0)
}

// assemble resolves every jump. Jumps are relative to the next
// instruction, forward only, and a conditional one reaches 255 at most.
func (a *bpfasm) assemble() ([]unix.SockFilter, error) {
	offset := func(from int, target string, limit int) (int, error) {
		if target == "" {
			return 0, nil
		}
		to, ok := a.labels[target]
		if !ok {
			return 0, fmt.Errorf("instruction %d jumps to undefined label %q", from, target)
		}
		d := to - (from + 1)
		if d < 0 || d > limit {
			return 0, fmt.Errorf("instruction %d cannot jump %d to %q", from, d, target)
		}
		return d, nil
	}
	for _, j := range a.jumps {
		ins := &a.prog[j.at]
		if ins.Code == unix.BPF_JMP|unix.BPF_JA {
			d, err := offset(j.at, j.jt, 1<<31)
			if err != nil {
				return nil, err
			}
			ins.K = uint32(d)
			continue
		}
		jt, err := offset(j.at, j.jt, 255)
		if err != nil {
			return nil, err
		}
		jf, err := offset(j.at, j.jf, 255)
		if err != nil {
			return nil, err
		}
		ins.Jt, ins.Jf = uint8(jt), uint8(jf)
	}
	if n := len(a.prog); n == 0 || a.prog[n-1].Code != unix.BPF_RET|unix.BPF_K {
		return nil, fmt.Errorf("the program does not end in a return")
	}
	return a.prog, nil
}
