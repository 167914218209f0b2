package sandbox

import "golang.org/x/sys/unix"

// ExitStatus is r as a shell would report it, for a CLI that passes a
// build's status through (`pkgfleet-worker sandbox exec`): the exit code,
// 128+n for a death by signal n, and 137 (SIGKILL) for a limit.
func (r Result) ExitStatus() int {
	switch {
	case r.Killed != "":
		return 128 + int(unix.SIGKILL)
	case r.Signal != "":
		if n := unix.SignalNum(r.Signal); n != 0 {
			return 128 + int(n)
		}
		return 128 + int(unix.SIGKILL)
	default:
		return r.ExitCode
	}
}
