//go:build unix

// O_NOFOLLOW exists on every unix; the services that read artifacts run on
// Linux, and this keeps pkgmeta building on a developer's Mac.

package pkgmeta

import "syscall"

const noFollow = syscall.O_NOFOLLOW
