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
var errNoLandlock = errors.New("no Landlock on this kernel (Linux >= 5.19 with landlock in the kernel's lsm= list)")

// landlockABI reports the kernel's Landlock ABI version: 0 with ENOSYS
// (not built in) or EOPNOTSUPP (not enabled), 0 with EPERM when a seccomp
// profile refuses the call, which needs another remedy.
func landlockABI() (int, unix.Errno) {
	abi, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0, errno
	}
	return int(abi), 0
}

// applyLandlock puts the calling thread, and what it execs, in a Landlock
// domain of its own. Any domain makes the kernel refuse ptrace-mode access
// from inside it to every process outside it: /proc/<pid>/environ, mem,
// maps, fd, root and cwd of the worker, the helpers and other builds.
//
// A domain must restrict something, and restricting files costs builds:
// a rule set that handles any file access makes every rename or link
// across directories fail with EXDEV unless it also handles "refer" and
// allows it (setuptools moves its sdist so). So from ABI 6 (Linux 6.12)
// the domain only scopes abstract UNIX sockets and signals to itself; on
// ABI 2 to 5 it handles making block devices (which no build can do
// anyway) and "refer", allowed beneath /. ABI 1 has no "refer": a domain
// there would break builds, so it counts as no Landlock.
// With required unset, a kernel without Landlock is no error: the fresh
// /proc of the full tier already hides every other process.
// maxABI > 0 caps the ABI used (tests). no_new_privs must already be set;
// / must be the sandbox's root.
func applyLandlock(required bool, maxABI int) error {
	abi, errno := landlockABI()
	if maxABI > 0 {
		abi = min(abi, maxABI)
	}
	if abi < 2 {
		switch {
		case !required:
			return nil
		case errno == unix.EPERM:
			return fmt.Errorf("landlock_create_ruleset: %w", errno)
		}
		return errNoLandlock
	}
	var attr unix.LandlockRulesetAttr
	if abi >= landlockScopeABI {
		attr.Scoped = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
	} else {
		attr.Access_fs = unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK | unix.LANDLOCK_ACCESS_FS_REFER
	}
	fd, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if errno != 0 {
		return fmt.Errorf("landlock_create_ruleset: %w", errno)
	}
	defer unix.Close(int(fd))
	if attr.Access_fs != 0 {
		root, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(root)
		rule := unix.LandlockPathBeneathAttr{Allowed_access: unix.LANDLOCK_ACCESS_FS_REFER, Parent_fd: int32(root)}
		if _, _, errno := unix.RawSyscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH,
			uintptr(unsafe.Pointer(&rule)), 0, 0, 0); errno != 0 {
			return fmt.Errorf("landlock_add_rule: %w", errno)
		}
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); errno != 0 {
		return fmt.Errorf("landlock_restrict_self: %w", errno)
	}
	return nil
}
