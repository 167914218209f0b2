package main

func int80(nr uintptr) uintptr

// foreignABIs tries getpid through the i386 and x32 ABIs; the filter
// must kill the process at the first one.
func foreignABIs(which string) {
	switch which {
	case "i386":
		int80(20) // getpid on i386
	case "x32":
		raw(0x40000000 + 39) // __X32_SYSCALL_BIT | getpid
	}
}
