package sandbox

import (
	"fmt"
	"unsafe"

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

// signalSyscalls may not target PID 1, the helper, whose death would end
// the build with a misleading report.
var signalSyscalls = []uint32{
	unix.SYS_KILL, unix.SYS_TKILL, unix.SYS_TGKILL, unix.SYS_RT_SIGQUEUEINFO,
	unix.SYS_RT_TGSIGQUEUEINFO, unix.SYS_PIDFD_OPEN,
}

const cloneNamespaceFlags = unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID |
	unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

// seccompProgram assembles the filter. Jumps are relative, so the program
// is built back to front from labelled blocks.
func seccompProgram() []unix.SockFilter {
	const (
		ld   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge  = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		jset = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
	)
	retAllow := unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ALLOW}
	retErrno := func(e unix.Errno) unix.SockFilter {
		return unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(e)}
	}
	retKill := unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_KILL_PROCESS}

	// Tail blocks, each ending in a return; the dispatcher jumps to them.
	var tail []unix.SockFilter
	block := func(ins ...unix.SockFilter) int { // returns the block's index in tail
		tail = append(tail, ins...)
		return len(tail) - len(ins)
	}
	eperm := block(retErrno(unix.EPERM))
	enosys := block(retErrno(unix.ENOSYS))
	allow := block(retAllow)
	// clone: namespace flags in the low word of arg0 → EPERM.
	cloneChk := block(
		unix.SockFilter{Code: ld, K: offArg0},
		unix.SockFilter{Code: jset, K: cloneNamespaceFlags, Jt: 0, Jf: 1},
		retErrno(unix.EPERM),
		retAllow,
	)
	// ioctl: TIOCSTI and TIOCLINUX compared on the low 32 bits of arg1,
	// as the kernel does (CVE-2019-10063, CVE-2023-28100).
	ioctlChk := block(
		unix.SockFilter{Code: ld, K: offArg0 + 8},
		unix.SockFilter{Code: jeq, K: unix.TIOCSTI, Jt: 2, Jf: 0},
		unix.SockFilter{Code: jeq, K: unix.TIOCLINUX, Jt: 1, Jf: 0},
		retAllow,
		retErrno(unix.EPERM),
	)
	// socket: only the families builds use (flatpak's list); the exotic
	// ones carry most of the unprivileged kernel attack surface.
	socketChk := block(
		unix.SockFilter{Code: ld, K: offArg0},
		unix.SockFilter{Code: jeq, K: unix.AF_UNIX, Jt: 4},
		unix.SockFilter{Code: jeq, K: unix.AF_INET, Jt: 3},
		unix.SockFilter{Code: jeq, K: unix.AF_INET6, Jt: 2},
		unix.SockFilter{Code: jeq, K: unix.AF_NETLINK, Jt: 1},
		retErrno(unix.EAFNOSUPPORT),
		retAllow,
	)
	// Signals to pid 1 (low word; pid_t is 32 bits).
	pid1Chk := block(
		unix.SockFilter{Code: ld, K: offArg0},
		unix.SockFilter{Code: jeq, K: 1, Jt: 0, Jf: 1},
		retErrno(unix.EPERM),
		retAllow,
	)

	// Head: architecture check, then one compare per syscall.
	head := []unix.SockFilter{
		{Code: ld, K: offArch},
		{Code: jeq, K: auditArch, Jt: 1, Jf: 0},
		retKill, // a foreign ABI (i386 on x86-64) has other numbers: kill
		{Code: ld, K: offNr},
	}
	if x32Bit != 0 {
		head = append(head, unix.SockFilter{Code: jge, K: x32Bit, Jt: 0, Jf: 1}, retKill)
	}
	type rule struct {
		nr     uint32
		target int
	}
	var rules []rule
	for _, nr := range deniedSyscalls {
		rules = append(rules, rule{nr, eperm})
	}
	for _, nr := range enosysSyscalls {
		rules = append(rules, rule{nr, enosys})
	}
	for _, nr := range signalSyscalls {
		rules = append(rules, rule{nr, pid1Chk})
	}
	rules = append(rules, rule{unix.SYS_CLONE, cloneChk}, rule{unix.SYS_IOCTL, ioctlChk},
		rule{unix.SYS_SOCKET, socketChk})

	// After the compares comes a jump to allow, then the tail.
	n := len(rules)
	prog := head
	for i, r := range rules {
		// Distance from the instruction after this one to tail[r.target]:
		// the remaining compares, the "ja allow", then the target offset.
		dist := (n - i - 1) + 1 + r.target
		if dist > 255 {
			panic("seccomp program too long for a conditional jump")
		}
		prog = append(prog, unix.SockFilter{Code: jeq, K: r.nr, Jt: uint8(dist), Jf: 0})
	}
	prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: uint32(allow)})
	return append(prog, tail...)
}

// installSeccomp loads the filter for the calling thread, which then execs.
// no_new_privs must already be set.
func installSeccomp() error {
	prog := seccompProgram()
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0,
		uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER): %w", errno)
	}
	return nil
}
