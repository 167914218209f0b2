package pkgmeta

import "syscall"

const noFollow = syscall.O_NOFOLLOW
