//go:build linux

package sandbox

import "golang.org/x/sys/unix"

const (
	auditArch = unix.AUDIT_ARCH_X86_64
	// x32 syscalls share AUDIT_ARCH_X86_64 and set this bit in the number.
	x32Bit = 0x40000000
)
