package build

import "syscall"

const noFollow = syscall.O_NOFOLLOW
