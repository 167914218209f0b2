// Command probe attempts, from inside a sandbox, the system calls a build
// must not be able to make, and prints one "name: result" line per attempt
// ("ok" or the errno name). The escape suite in ../../sandbox_test.go
// builds it and runs it in the sandbox.
package main

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	switch os.Args[1] {
	case "syscalls":
		syscalls()
	case "euid":
		fmt.Printf("euid=%d uid=%d\n", os.Geteuid(), os.Getuid())
	case "connect", "connect-unix":
		network := map[string]string{"connect": "tcp", "connect-unix": "unix"}[os.Args[1]]
		c, err := net.DialTimeout(network, os.Args[2], 2*time.Second)
		if err != nil {
			fmt.Println("connect:", err)
			os.Exit(1)
		}
		c.Close()
		fmt.Println("connect: ok")
	case "i386", "x32":
		foreignABIs(os.Args[1])
		fmt.Println(os.Args[1] + ": survived")
	case "membomb":
		// Allocate and touch 1 MiB at a time until something stops us.
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	case "reach":
		for _, pid := range os.Args[2:] {
			reach(pid)
		}
	case "tty":
		report("open /dev/tty", func() error {
			f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
			if err == nil {
				f.Close()
			}
			return err
		}())
	default:
		fmt.Fprintln(os.Stderr, "unknown probe", os.Args[1])
		os.Exit(2)
	}
}

func report(name string, err error) {
	switch e := err.(type) {
	case nil:
		fmt.Printf("%s: ok\n", name)
	case syscall.Errno:
		fmt.Printf("%s: %s\n", name, unix.ErrnoName(e))
	case *os.PathError:
		report(name, e.Err)
	default:
		fmt.Printf("%s: %v\n", name, err)
	}
}

func raw(nr uintptr, a ...uintptr) error {
	var args [6]uintptr
	copy(args[:], a)
	_, _, e := unix.RawSyscall6(nr, args[0], args[1], args[2], args[3], args[4], args[5])
	if e != 0 {
		return e
	}
	return nil
}

func str(s string) uintptr {
	b, _ := unix.BytePtrFromString(s)
	return uintptr(unsafe.Pointer(b))
}

func syscalls() {
	report("mount", unix.Mount("none", "/tmp", "tmpfs", 0, ""))
	report("mount-bind", unix.Mount("/usr", "/tmp", "", unix.MS_BIND, ""))
	report("remount", unix.Mount("", "/usr", "", unix.MS_REMOUNT|unix.MS_BIND, ""))
	report("umount2", unix.Unmount("/proc/sys", unix.MNT_DETACH))
	report("pivot_root", unix.PivotRoot(".", "."))
	report("chroot", unix.Chroot("/"))
	report("setns", unix.Setns(0, 0))
	report("unshare-user", unix.Unshare(unix.CLONE_NEWUSER))
	report("unshare-mnt", unix.Unshare(unix.CLONE_NEWNS))
	// A raw clone that succeeded would return in a copy of this process:
	// the child exits at once.
	r, _, e := unix.RawSyscall6(unix.SYS_CLONE, unix.CLONE_NEWUSER|uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e == 0 && r == 0 {
		unix.RawSyscall(unix.SYS_EXIT, 0, 0, 0)
	}
	if e == 0 {
		report("clone-newuser", nil)
	} else {
		report("clone-newuser", e)
	}
	report("clone3", raw(unix.SYS_CLONE3, 0, 0))
	report("keyctl", raw(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, uintptr(0xfffffffd), 0))
	report("add_key", raw(unix.SYS_ADD_KEY, str("user"), str("x"), str("y"), 1, uintptr(0xfffffffd)))
	report("request_key", raw(unix.SYS_REQUEST_KEY, str("user"), str("x"), 0, 0))
	report("ptrace", raw(unix.SYS_PTRACE, unix.PTRACE_TRACEME))
	// A null handle: EFAULT where the call reaches the kernel.
	report("open_by_handle_at", raw(unix.SYS_OPEN_BY_HANDLE_AT, atFdcwd, 0, unix.O_RDONLY))
	report("perf_event_open", raw(unix.SYS_PERF_EVENT_OPEN, 0, 0, ^uintptr(0), ^uintptr(0), 0))
	report("bpf", raw(unix.SYS_BPF, 0, 0, 0))
	report("open_tree", raw(unix.SYS_OPEN_TREE, atFdcwd, str("/usr"), unix.OPEN_TREE_CLONE))
	report("move_mount", raw(unix.SYS_MOVE_MOUNT, 0, str(""), atFdcwd, str("/tmp"), 0))
	report("fsopen", raw(unix.SYS_FSOPEN, str("tmpfs"), 0))
	report("fsconfig", raw(unix.SYS_FSCONFIG, 0, 0, 0, 0, 0))
	report("fsmount", raw(unix.SYS_FSMOUNT, 0, 0, 0))
	report("fspick", raw(unix.SYS_FSPICK, atFdcwd, str("/"), 0))
	report("mount_setattr", raw(unix.SYS_MOUNT_SETATTR, atFdcwd, str("/"), 0, 0, 0))
	report("ioctl-TIOCSTI", raw(unix.SYS_IOCTL, 0, unix.TIOCSTI, str("x")))
	report("ioctl-TIOCSTI-highbits", raw(unix.SYS_IOCTL, 0, 0xffffffff00000000|unix.TIOCSTI, str("x")))
	report("ioctl-TIOCLINUX", raw(unix.SYS_IOCTL, 0, unix.TIOCLINUX, str("\x02")))
	report("kill-pid1", unix.Kill(1, unix.SIGTERM))
	report("io_uring_setup", raw(unix.SYS_IO_URING_SETUP, 1, 0))
	report("setgroups", raw(unix.SYS_SETGROUPS, 0, 0))
	report("setuid0", raw(unix.SYS_SETUID, 0))
	report("sethostname", unix.Sethostname([]byte("evil")))
	report("syslog", raw(unix.SYS_SYSLOG, 3, 0, 0))
	for _, f := range []struct {
		name   string
		family int
		typ    int
	}{{"unix", unix.AF_UNIX, unix.SOCK_STREAM}, {"inet", unix.AF_INET, unix.SOCK_DGRAM},
		{"inet6", unix.AF_INET6, unix.SOCK_DGRAM}, {"netlink", unix.AF_NETLINK, unix.SOCK_RAW},
		{"packet", unix.AF_PACKET, unix.SOCK_RAW}, {"alg", unix.AF_ALG, unix.SOCK_SEQPACKET},
		{"vsock", unix.AF_VSOCK, unix.SOCK_STREAM}, {"tipc", unix.AF_TIPC, unix.SOCK_RDM}} {
		fd, err := unix.Socket(f.family, f.typ, 0)
		if err == nil {
			unix.Close(fd)
		}
		report("socket-"+f.name, err)
	}
}

var atFdcwd = func() uintptr { v := unix.AT_FDCWD; return uintptr(v) }()

// reach tries, for a process outside the sandbox named by its number in the
// visible /proc, every way to read it or to act on it through /proc.
func reach(pid string) {
	dir := "/proc/" + pid
	if _, err := os.Stat(dir + "/cmdline"); err != nil {
		report(pid+" visible", err) // the attack needs the entry to exist
		return
	}
	// mem is refused at open; the others may open and refuse the read.
	fh, err := os.Open(dir + "/mem")
	if err == nil {
		fh.Close()
	}
	report(pid+" open mem", err)
	for _, f := range []string{"environ", "maps", "auxv", "syscall", "stack", "personality"} {
		_, err := readSome(dir + "/" + f)
		report(pid+" read "+f, err)
	}
	for _, l := range []string{"root", "cwd"} {
		_, err := os.ReadDir(dir + "/" + l + "/")
		report(pid+" "+l, err)
	}
	_, err = os.Readlink(dir + "/exe")
	report(pid+" exe", err)
	// The numbers of its fds may be listed; what they are may not.
	fds, _ := os.ReadDir(dir + "/fd")
	for _, fd := range fds {
		_, err := os.Readlink(dir + "/fd/" + fd.Name())
		report(pid+" fd "+fd.Name(), err)
		_, err = readSome(dir + "/fd/" + fd.Name())
		report(pid+" open fd "+fd.Name(), err)
	}
	// A /proc/<pid> directory fd is a pidfd to pidfd_send_signal and pidfd_getfd.
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		report(pid+" open dir", err)
		return
	}
	defer unix.Close(fd)
	report(pid+" pidfd_send_signal", raw(unix.SYS_PIDFD_SEND_SIGNAL, uintptr(fd), 0, 0, 0))
	report(pid+" pidfd_getfd", raw(unix.SYS_PIDFD_GETFD, uintptr(fd), 0, 0))
}

func readSome(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Read(make([]byte, 64))
}
