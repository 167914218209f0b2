//go:build linux

package sandbox

import (
	"errors"
	"fmt"

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

// planLandlock chooses the Landlock domain stage C puts the build in
// (stageC.enterLandlock); the domain keeps everything the build execs.
// Any domain makes the kernel refuse ptrace-mode access from inside it to
// every process outside it: /proc/<pid>/environ, mem, maps, fd, root and
// cwd of the worker, the launchers and other builds.
//
// A domain must restrict something, and restricting files costs builds:
// a rule set that handles any file access makes every rename or link
// across directories fail with EXDEV unless it also handles "refer" and
// allows it (setuptools moves its sdist so). So from ABI 6 (Linux 6.12)
// the domain only scopes abstract UNIX sockets and signals to itself; on
// ABI 2 to 5 it handles making block devices (which no build can do
// anyway) and "refer", allowed beneath /. ABI 1 has no "refer": a domain
// there would break builds, so it counts as no Landlock (abi 0 in the plan).
// abi is the kernel's (landlockABI); maxABI > 0 caps the ABI used (tests).
func planLandlock(abi, maxABI int) landlockPlan {
	if maxABI > 0 {
		abi = min(abi, maxABI)
	}
	var p landlockPlan
	switch {
	case abi >= landlockScopeABI:
		p.abi = abi
		p.attr.Scoped = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
	case abi >= 2:
		p.abi = abi
		p.attr.Access_fs = unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK | unix.LANDLOCK_ACCESS_FS_REFER
		p.rule.Allowed_access = unix.LANDLOCK_ACCESS_FS_REFER
	}
	return p
}

// landlockMissing explains why a tier that needs Landlock (masked-proc)
// cannot have it; a kernel without Landlock is no error for the full
// tier, whose fresh /proc already hides every other process.
func landlockMissing() error {
	if _, errno := landlockABI(); errno == unix.EPERM {
		return fmt.Errorf("landlock_create_ruleset: %w", errno)
	}
	return errNoLandlock
}
