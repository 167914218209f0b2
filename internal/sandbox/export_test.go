//go:build linux

package sandbox

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PauseKeepalives stops (or resumes) the worker side of the dead man's
// switch for every build of n, as a stalled worker would.
func (n *Namespaces) PauseKeepalives(paused bool) { n.keepalivesPaused.Store(paused) }

// ConfineAndExec puts this process under one of the build's confinements
// alone, "seccomp" (the filter, with no_new_privs) or "landlock" (the
// domain stage C enters), and execs argv: BenchmarkToolSlowdown measures
// what each costs a tool without the rest of the sandbox.
func ConfineAndExec(what string, argv []string) error {
	// Landlock binds the calling thread only: set up and exec from one.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	switch what {
	case "seccomp":
		filter := seccompProgram()
		prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
			return fmt.Errorf("seccomp: %w", e)
		}
	case "landlock":
		abi, _ := landlockABI()
		l := planLandlock(abi, 0)
		if l.abi == 0 {
			return errNoLandlock
		}
		fd, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&l.attr)), unsafe.Sizeof(l.attr), 0)
		if e != 0 {
			return fmt.Errorf("landlock: %w", e)
		}
		if l.attr.Access_fs != 0 {
			root, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			l.rule.Parent_fd = int32(root)
			if _, _, e := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&l.rule)), 0, 0, 0); e != 0 {
				return fmt.Errorf("landlock rule: %w", e)
			}
		}
		if _, _, e := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); e != 0 {
			return fmt.Errorf("landlock: %w", e)
		}
	default:
		return fmt.Errorf("confine: %q is neither seccomp nor landlock", what)
	}
	return unix.Exec(argv[0], argv, os.Environ())
}

// KernelLandlockABI is the kernel's Landlock ABI version (0: none).
func KernelLandlockABI() int {
	abi, _ := landlockABI()
	return abi
}
