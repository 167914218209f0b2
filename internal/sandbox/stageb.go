//go:build linux

package sandbox

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stage B, the sandbox's PID 1, is a raw clone of the launcher into new
// user, mount, PID, IPC, UTS (and network) namespaces, not a program
// start: no Go runtime starts per build, and only the small launcher's
// page tables are copied. Like stage C (stagec.go) it may only read memory
// prepared before the clone and make raw system calls until it ends, so
// its whole set-up is a plan: a list of system calls with every argument
// computed beforehand by planSandbox (plan.go), which reads top to
// bottom as the security argument. Fds the plan opens go to numbers it
// chose (slots), so later steps can name them, and /proc/self/fd/N paths
// can be written out in advance. After the plan, stage B stays PID 1 and
// only reaps: the launcher outside the namespaces supervises the build.

// opKind is what one step of the plan does.
type opKind uint8

const (
	opSys       opKind = iota // one system call
	opCloneC                  // clone stage C into user namespace 2 and wait for its execve
	opSameInode               // stat[0] and stat[1] name the same inode
	opIfUp                    // set IFF_UP in ifr's flags
)

// op is one step of stage B's plan.
type op struct {
	kind opKind
	nr   uintptr
	a    [6]uintptr
	// to >= 0: the result is an fd; it is moved to this number.
	to int32
	// ok are errors that are no failure: the next skip steps are skipped.
	ok   [3]syscall.Errno
	skip int
	// data: a result of 0 fails the step (a read that must see a byte).
	data bool
}

// stageB is stage B's plan and the memory it works in.
type stageB struct {
	ops   []op
	names []string // each op's step, for the failure report
	keep  [][]byte // strings the ops point into
	next  int32    // the next fd number free for a slot
	err   error    // a path the plan cannot express (a NUL byte)

	c    *stageC
	errW uintptr // failure reports to the launcher
	// statusW carries stage C's wait status to the launcher.
	statusW uintptr

	cpid     uintptr
	status   int32
	pidfd    int32
	stat     [2]unix.Statx_t // the inode check
	one      [1]byte
	ifr      struct{ b [40]byte } // struct ifreq: name, then flags at offset 16
	addr     unix.RawSockaddrInet4
	iov      unix.Iovec
	msg      unix.Msghdr
	cmsg     []byte
	hows     [3]unix.OpenHow
	attrs    []*unix.MountAttr
	sigDfl   kernelSigaction
	sigAll   uint64
	sigSaved uint64
	report   [3]uint32 // stage (1), step, errno
}

// The open_how variants of the plan.
const (
	howHost    = iota // a host directory, no symlink anywhere on the path
	howBeneath        // below the new root's fd, no symlink, never leaving it
	howKnob           // a /proc knob below the new root, no symlink
)

func newStageB(c *stageC, firstSlot int32) *stageB {
	b := &stageB{c: c, next: firstSlot, sigAll: ^uint64(0)}
	b.hows[howHost] = unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	b.hows[howBeneath] = unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	b.hows[howKnob] = unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}
	return b
}

// --- building the plan (in the launcher, before the clone) ---

// sys appends one system call; the returned op may be adjusted at once.
func (b *stageB) sys(step string, nr uintptr, args ...uintptr) *op {
	o := op{kind: opSys, nr: nr, to: -1}
	copy(o.a[:], args)
	b.ops = append(b.ops, o)
	b.names = append(b.names, step)
	return &b.ops[len(b.ops)-1]
}

// into moves the call's result, an fd, to slot.
func (o *op) into(slot uintptr) *op { o.to = int32(slot); return o }

// allow treats errs as success and skips the next skip steps on them.
func (o *op) allow(skip int, errs ...syscall.Errno) *op {
	o.skip = skip
	copy(o.ok[:], errs)
	return o
}

// slot reserves an fd number for the plan.
func (b *stageB) slot() uintptr {
	s := b.next
	b.next++
	return uintptr(s)
}

// str is s as a NUL-terminated string the plan can point to.
func (b *stageB) str(s string) uintptr {
	if strings.IndexByte(s, 0) >= 0 && b.err == nil {
		b.err = fmt.Errorf("%.40q holds a NUL byte", s)
	}
	p := append([]byte(s), 0)
	b.keep = append(b.keep, p)
	return uintptr(unsafe.Pointer(&p[0]))
}

// fdPath is /proc/self/fd/slot.
func (b *stageB) fdPath(slot uintptr) uintptr { return b.str(fdPath(int(slot))) }

func (b *stageB) how(i int) (uintptr, uintptr) {
	return uintptr(unsafe.Pointer(&b.hows[i])), unsafe.Sizeof(b.hows[i])
}

// openBeneath opens path (absolute, as seen in the new root) below root
// into a new slot, never following a symlink and never leaving the root;
// with create, missing components are made (0755) one by one.
func (b *stageB) openBeneath(step string, root uintptr, path string, create bool) (slot uintptr, first *op) {
	rel := strings.TrimPrefix(filepath.Clean(path), "/")
	slot = b.slot()
	how, size := b.how(howBeneath)
	if !create || rel == "" {
		if rel == "" {
			rel = "."
		}
		return slot, b.sys(step, unix.SYS_OPENAT2, root, b.str(rel), how, size).into(slot)
	}
	dir := root
	for _, comp := range strings.Split(rel, "/") {
		b.sys(step, unix.SYS_MKDIRAT, dir, b.str(comp), 0o755).allow(0, unix.EEXIST)
		b.sys(step, unix.SYS_OPENAT2, dir, b.str(comp), how, size).into(slot)
		dir = slot
	}
	return slot, nil
}

// setAttr sets mount attributes on the mount at slot (and, recursive, on
// every mount below it). Flags the host locked (noexec, nosuid …) are kept.
func (b *stageB) setAttr(step string, slot uintptr, recursive bool, set uint64) *op {
	flags := uintptr(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	attr := &unix.MountAttr{Attr_set: set}
	b.attrs = append(b.attrs, attr)
	return b.sys(step, unix.SYS_MOUNT_SETATTR, slot, b.str(""), flags, uintptr(unsafe.Pointer(attr)), unsafe.Sizeof(*attr))
}

// mount is mount(2) with its strings.
func (b *stageB) mount(step, source string, target uintptr, fstype string, flags uintptr, data string) *op {
	return b.sys(step, unix.SYS_MOUNT, b.str(source), target, b.str(fstype), flags, b.str(data))
}

// writeFile opens path for writing and writes data in one call.
func (b *stageB) writeFile(step, path, data string) {
	fd := b.slot()
	b.sys(step, unix.SYS_OPENAT, atFDCWD, b.str(path), unix.O_WRONLY|unix.O_CLOEXEC).into(fd)
	b.sys(step, unix.SYS_WRITE, fd, b.str(data), uintptr(len(data)))
	b.sys(step, unix.SYS_CLOSE, fd)
}

func (b *stageB) close(fd uintptr) { b.sys("close", unix.SYS_CLOSE, fd) }

func (b *stageB) special(step string, kind opKind) {
	b.ops = append(b.ops, op{kind: kind, to: -1})
	b.names = append(b.names, step)
}

// --- running it (in the child) ---

// rawCloneB clones the calling thread into stage B's new namespaces and
// runs the plan in the child. In the parent it returns the child's PID
// and a pidfd for it. Every signal stays blocked in the child: no Go
// handler may run there (see rawClone in stagec.go).
//
//go:nosplit
//go:norace
func rawCloneB(b *stageB, flags uintptr) (pid, pidfd int, errno syscall.Errno) {
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&b.sigAll)),
		uintptr(unsafe.Pointer(&b.sigSaved)), 8, 0, 0)
	r, _, e := syscall.RawSyscall6(syscall.SYS_CLONE, flags|unix.CLONE_PIDFD|uintptr(syscall.SIGCHLD), 0,
		uintptr(unsafe.Pointer(&b.pidfd)), 0, 0, 0)
	if e != 0 || r != 0 {
		syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&b.sigSaved)), 0, 8, 0, 0)
		return int(r), int(b.pidfd), e
	}
	b.run()
	return 0, 0, 0 // not reached
}

// run is stage B: the plan, step by step, then PID 1's reaping. It does
// not return.
//
//go:nosplit
//go:norace
func (b *stageB) run() {
	for i := 0; i < len(b.ops); i++ {
		o := &b.ops[i]
		switch o.kind {
		case opSys:
			r, _, e := syscall.RawSyscall6(o.nr, o.a[0], o.a[1], o.a[2], o.a[3], o.a[4], o.a[5])
			if e != 0 {
				if e == o.ok[0] || e == o.ok[1] || e == o.ok[2] {
					i += o.skip
					continue
				}
				b.fail(i, e)
			}
			if o.data && r == 0 {
				b.fail(i, syscall.EPIPE)
			}
			if o.to >= 0 && r != uintptr(o.to) {
				if _, _, e := syscall.RawSyscall(unix.SYS_DUP3, r, uintptr(o.to), unix.O_CLOEXEC); e != 0 {
					b.fail(i, e)
				}
				syscall.RawSyscall(syscall.SYS_CLOSE, r, 0, 0)
			}
		case opCloneC:
			// No copy of this address space: stage C borrows it, on a stack of its own,
			// until its execve, while this process sleeps (CLONE_VFORK).
			r, e := cloneOnStack(uintptr(syscall.CLONE_NEWUSER|syscall.CLONE_VM|syscall.CLONE_VFORK|syscall.SIGCHLD), b.c.stack, b.c)
			if e != 0 {
				b.fail(i, syscall.Errno(e))
			}
			b.cpid = r
		case opSameInode:
			if b.stat[0].Ino != b.stat[1].Ino || b.stat[0].Dev_major != b.stat[1].Dev_major ||
				b.stat[0].Dev_minor != b.stat[1].Dev_minor {
				b.fail(i, syscall.EXDEV)
			}
		case opIfUp:
			*(*uint16)(unsafe.Pointer(&b.ifr.b[unix.IFNAMSIZ])) |= unix.IFF_UP
		}
	}
	b.reap()
}

// reap is PID 1 once the build runs: it reaps every process of the
// namespace and reports how stage C ended. It exits when nothing is left;
// the launcher kills it (and with it the namespace) once it has judged the
// build.
//
//go:nosplit
//go:norace
func (b *stageB) reap() {
	for {
		r, _, e := syscall.RawSyscall6(syscall.SYS_WAIT4, ^uintptr(0), uintptr(unsafe.Pointer(&b.status)), 0, 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
		}
		if r == b.cpid {
			syscall.RawSyscall(syscall.SYS_WRITE, b.statusW, uintptr(unsafe.Pointer(&b.status)), 4)
		}
	}
}

// fail reports the step that failed to the launcher and exits; as PID 1,
// its exit ends every process of the namespace.
//
//go:nosplit
//go:norace
func (b *stageB) fail(step int, e syscall.Errno) {
	b.report[0], b.report[1], b.report[2] = 1, uint32(step), uint32(e)
	syscall.RawSyscall6(syscall.SYS_WRITE, b.errW, uintptr(unsafe.Pointer(&b.report[0])), 12, 0, 0, 0)
	for {
		syscall.RawSyscall6(syscall.SYS_EXIT_GROUP, 127, 0, 0, 0, 0, 0)
	}
}

// closeGaps closes every inherited fd from 3 up that is not in keep.
func (b *stageB) closeGaps(keep []int) {
	next := 3
	keep = slices.Sorted(slices.Values(keep))
	for _, fd := range keep {
		if fd > next {
			b.sys("close inherited fds", unix.SYS_CLOSE_RANGE, uintptr(next), uintptr(fd-1), 0)
		}
		next = max(next, fd+1)
	}
	b.sys("close inherited fds", unix.SYS_CLOSE_RANGE, uintptr(next), ^uintptr(0), 0)
}
