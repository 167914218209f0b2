package sandbox

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// landlockScopeABI is the first Landlock ABI with scopes (Linux 6.12).
const landlockScopeABI = 6

// errNoLandlock is what stage C reports when the masked-proc tier needs a
// Landlock domain and the kernel has none to give.
var errNoLandlock = errors.New("no Landlock on this kernel (Linux >= 5.13 with landlock in the kernel's lsm= list)")

// landlockABI reports the kernel's Landlock ABI version, 0 when Landlock
// is missing, disabled, or refused by a seccomp profile.
func landlockABI() int {
	abi, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0
	}
	return int(abi)
}

// applyLandlock puts the calling thread, and what it execs, in a Landlock
// domain of its own. Any domain makes the kernel refuse ptrace-mode access
// from inside it to every process outside it: /proc/<pid>/environ, mem,
// maps, fd, root and cwd of the worker, the helpers and other builds. The
// rule set handles only creating block devices, which no build can do
// anyway, so files are as reachable as before. From ABI 6 (Linux 6.12) the
// domain also scopes abstract UNIX sockets and signals to itself.
// With required unset, a kernel without Landlock is no error: the fresh
// /proc of the full tier already hides every other process.
// no_new_privs must already be set.
func applyLandlock(required bool) error {
	abi := landlockABI()
	if abi < 1 {
		if required {
			return errNoLandlock
		}
		return nil
	}
	attr := unix.LandlockRulesetAttr{Access_fs: unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK}
	if abi >= landlockScopeABI {
		attr.Scoped = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
	}
	fd, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if errno != 0 {
		return fmt.Errorf("landlock_create_ruleset: %w", errno)
	}
	defer unix.Close(int(fd))
	if _, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); errno != 0 {
		return fmt.Errorf("landlock_restrict_self: %w", errno)
	}
	return nil
}
