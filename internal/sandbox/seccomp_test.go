//go:build linux

package sandbox

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The filter is run here through a classic BPF interpreter, decision by
// decision; escape_test.go's TestSyscallFilterDeniesEscapes checks the
// same filter in the kernel, end to end.

// seccompData is struct seccomp_data as the interpreter must see it. The
// kernel loads words in host order (little-endian on amd64 and arm64);
// golang.org/x/net/bpf loads them big-endian, as packets are. So each
// 32-bit word goes in big-endian at the offset the kernel would use: the
// filter reads the same values it reads in the kernel.
func seccompData(arch, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[offNr:], nr)
	binary.BigEndian.PutUint32(b[offArch:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[offArg0+8*i:], uint32(a))       // low word first, as on little-endian
		binary.BigEndian.PutUint32(b[offArg0+8*i+4:], uint32(a>>32)) // then the high word
	}
	return b
}

// runFilter runs prog on one call and returns the filter's verdict.
func runFilter(t *testing.T, prog []unix.SockFilter, data []byte) uint32 {
	t.Helper()
	raw := make([]bpf.RawInstruction, len(prog))
	for i, ins := range prog {
		raw[i] = bpf.RawInstruction{Op: ins.Code, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the filter holds an instruction the interpreter cannot decode")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("the interpreter refuses the filter: %v", err)
	}
	v, err := vm.Run(data)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(v)
}

func verdictName(v uint32) string {
	switch v & unix.SECCOMP_RET_ACTION_FULL {
	case unix.SECCOMP_RET_ALLOW:
		return "allow"
	case unix.SECCOMP_RET_KILL_PROCESS:
		return "kill"
	case unix.SECCOMP_RET_ERRNO:
		return unix.ErrnoName(unix.Errno(v & unix.SECCOMP_RET_DATA))
	}
	return fmt.Sprintf("unknown verdict %#x", v)
}

// otherArch is an architecture the filter must not accept.
func otherArch() uint32 {
	if auditArch == unix.AUDIT_ARCH_X86_64 {
		return unix.AUDIT_ARCH_AARCH64
	}
	return unix.AUDIT_ARCH_X86_64
}

func TestSeccompFilterDecisions(t *testing.T) {
	prog := seccompProgram()
	const newUser, newNet = unix.CLONE_NEWUSER, unix.CLONE_NEWNET
	forkFlags := uint64(unix.CLONE_CHILD_SETTID | unix.CLONE_CHILD_CLEARTID | uint64(unix.SIGCHLD))
	threadFlags := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID)
	cases := []struct {
		name string
		arch uint32
		nr   uint32
		args []uint64
		want string
	}{
		{"read", auditArch, unix.SYS_READ, nil, "allow"},
		{"openat", auditArch, unix.SYS_OPENAT, nil, "allow"},
		{"execve", auditArch, unix.SYS_EXECVE, nil, "allow"},
		{"fork-like clone", auditArch, unix.SYS_CLONE, []uint64{forkFlags}, "allow"},
		{"thread clone", auditArch, unix.SYS_CLONE, []uint64{threadFlags}, "allow"},
		{"clone CLONE_NEWUSER", auditArch, unix.SYS_CLONE, []uint64{forkFlags | newUser}, "EPERM"},
		{"clone CLONE_NEWNET", auditArch, unix.SYS_CLONE, []uint64{newNet | uint64(unix.SIGCHLD)}, "EPERM"},
		{"clone CLONE_NEWCGROUP", auditArch, unix.SYS_CLONE, []uint64{unix.CLONE_NEWCGROUP}, "EPERM"},
		{"clone3", auditArch, unix.SYS_CLONE3, nil, "ENOSYS"},
		{"unshare", auditArch, unix.SYS_UNSHARE, []uint64{newUser}, "EPERM"},
		{"setns", auditArch, unix.SYS_SETNS, nil, "EPERM"},
		{"mount", auditArch, unix.SYS_MOUNT, nil, "EPERM"},
		{"umount2", auditArch, unix.SYS_UMOUNT2, nil, "EPERM"},
		{"pivot_root", auditArch, unix.SYS_PIVOT_ROOT, nil, "EPERM"},
		{"open_tree", auditArch, unix.SYS_OPEN_TREE, nil, "ENOSYS"},
		{"mount_setattr", auditArch, unix.SYS_MOUNT_SETATTR, nil, "ENOSYS"},
		{"open_by_handle_at", auditArch, unix.SYS_OPEN_BY_HANDLE_AT, nil, "EPERM"},
		{"ptrace", auditArch, unix.SYS_PTRACE, nil, "EPERM"},
		{"bpf", auditArch, unix.SYS_BPF, nil, "EPERM"},
		{"io_uring_setup", auditArch, unix.SYS_IO_URING_SETUP, nil, "EPERM"},
		{"keyctl", auditArch, unix.SYS_KEYCTL, nil, "EPERM"},
		{"ioctl TCGETS", auditArch, unix.SYS_IOCTL, []uint64{0, unix.TCGETS}, "allow"},
		{"ioctl TIOCSTI", auditArch, unix.SYS_IOCTL, []uint64{0, unix.TIOCSTI}, "EPERM"},
		{"ioctl TIOCSTI, high bits set", auditArch, unix.SYS_IOCTL, []uint64{0, 0xffffffff_00000000 | unix.TIOCSTI}, "EPERM"},
		{"ioctl TIOCLINUX", auditArch, unix.SYS_IOCTL, []uint64{0, unix.TIOCLINUX}, "EPERM"},
		{"socket AF_UNIX", auditArch, unix.SYS_SOCKET, []uint64{unix.AF_UNIX}, "allow"},
		{"socket AF_INET6", auditArch, unix.SYS_SOCKET, []uint64{unix.AF_INET6}, "allow"},
		{"socket AF_NETLINK", auditArch, unix.SYS_SOCKET, []uint64{unix.AF_NETLINK}, "allow"},
		{"socket AF_PACKET", auditArch, unix.SYS_SOCKET, []uint64{unix.AF_PACKET}, "EAFNOSUPPORT"},
		{"socket AF_VSOCK", auditArch, unix.SYS_SOCKET, []uint64{unix.AF_VSOCK}, "EAFNOSUPPORT"},
		{"kill pid 1", auditArch, unix.SYS_KILL, []uint64{1, uint64(unix.SIGKILL)}, "EPERM"},
		{"kill another pid", auditArch, unix.SYS_KILL, []uint64{2, uint64(unix.SIGKILL)}, "allow"},
		{"tgkill pid 1", auditArch, unix.SYS_TGKILL, []uint64{1, 1, uint64(unix.SIGTERM)}, "EPERM"},
		{"pidfd_open pid 1", auditArch, unix.SYS_PIDFD_OPEN, []uint64{1}, "EPERM"},
		{"pidfd_open another pid", auditArch, unix.SYS_PIDFD_OPEN, []uint64{7}, "allow"},
		{"read, wrong architecture", otherArch(), unix.SYS_READ, nil, "kill"},
		{"mount, wrong architecture", otherArch(), unix.SYS_MOUNT, nil, "kill"},
	}
	if x32Bit != 0 {
		cases = append(cases, struct {
			name string
			arch uint32
			nr   uint32
			args []uint64
			want string
		}{"x32 read", auditArch, x32Bit | unix.SYS_READ, nil, "kill"})
	}
	for _, c := range cases {
		if got := verdictName(runFilter(t, prog, seccompData(c.arch, c.nr, c.args...))); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	// And every listed call, so that no entry is lost to a jump.
	for _, list := range []struct {
		nrs  []uint32
		want string
	}{{deniedSyscalls, "EPERM"}, {enosysSyscalls, "ENOSYS"}} {
		for _, nr := range list.nrs {
			if got := verdictName(runFilter(t, prog, seccompData(auditArch, nr))); got != list.want {
				t.Errorf("syscall %d: %s, want %s", nr, got, list.want)
			}
		}
	}
}

func TestBPFAssemblerResolvesAndRefusesJumps(t *testing.T) {
	var a bpfasm
	a.load(offNr)
	a.jeq(7, "yes", "")
	a.ja("no")
	a.label("yes")
	a.ret(1)
	a.label("no")
	a.ret(2)
	prog, err := a.assemble()
	if err != nil {
		t.Fatal(err)
	}
	for nr, want := range map[uint32]uint32{7: 1, 8: 2} {
		if got := runFilter(t, prog, seccompData(auditArch, nr)); got != want {
			t.Errorf("nr %d: returned %d, want %d", nr, got, want)
		}
	}

	for _, c := range []struct {
		name, want string
		build      func(a *bpfasm)
	}{
		{"undefined label", `undefined label "nowhere"`, func(a *bpfasm) { a.jeq(1, "nowhere", ""); a.ret(0) }},
		{"backward jump", `cannot jump -2 to "back"`, func(a *bpfasm) { a.label("back"); a.load(0); a.jeq(1, "back", ""); a.ret(0) }},
		{"too far", `cannot jump 256 to "far"`, func(a *bpfasm) {
			a.jeq(1, "far", "")
			for range 256 {
				a.load(0)
			}
			a.label("far")
			a.ret(0)
		}},
		{"no final return", "does not end in a return", func(a *bpfasm) { a.load(0) }},
	} {
		var a bpfasm
		c.build(&a)
		if _, err := a.assemble(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: assemble() = %v, want an error with %q", c.name, err, c.want)
		}
	}
}
