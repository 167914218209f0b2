//go:build linux

package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// NetnsPrefix starts the name of every network namespace a test makes,
// followed by the test process's pid: "pkgfl-<pid>-<host>". A later run
// removes the namespaces of a process that is gone (a run killed before
// its cleanup), and leaves a live run's alone.
const NetnsPrefix = "pkgfl-"

// RequireRoot fails the test under CI=true unless it runs as root, and
// skips it otherwise: what needs root must never pass CI by skipping.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	switch {
	case os.Geteuid() == 0:
	case os.Getenv("CI") != "":
		t.Fatalf("this test needs root for %s (CI=true; CI runs the tests as root), euid %d", why, os.Geteuid())
	default:
		t.Skipf("needs root for %s", why)
	}
}

// Netns is a network namespace made by a test: a simulated host.
type Netns struct {
	Name string
	host string
}

// NewNetns makes the network namespace of host (its loopback up) and
// removes it when the test ends, after killing what still runs in it. It
// first removes the namespaces of earlier runs that are gone.
func NewNetns(t testing.TB, host string) *Netns {
	t.Helper()
	Require(t, "ip")
	RequireRoot(t, "network namespaces")
	if err := RemoveStaleNetns(); err != nil {
		t.Fatal(err)
	}
	n := &Netns{Name: fmt.Sprintf("%s%d-%s", NetnsPrefix, os.Getpid(), host), host: host}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(func() {
		if err := removeNetns(n.Name); err != nil {
			t.Error(err)
		}
	})
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// OwnNetns lists the namespaces this process made that still exist.
func OwnNetns() ([]string, error) {
	names, err := listNetns()
	var own []string
	for _, name := range names {
		if strings.HasPrefix(name, fmt.Sprintf("%s%d-", NetnsPrefix, os.Getpid())) {
			own = append(own, name)
		}
	}
	return own, err
}

// RemoveStaleNetns removes the namespaces whose process is gone, and kills
// what still runs in them (the children of a killed run).
func RemoveStaleNetns() error {
	names, err := listNetns()
	if err != nil {
		return err
	}
	for _, name := range names {
		pid, _, ok := strings.Cut(strings.TrimPrefix(name, NetnsPrefix), "-")
		if p, err := strconv.Atoi(pid); !strings.HasPrefix(name, NetnsPrefix) || !ok || err != nil || syscall.Kill(p, 0) == nil {
			continue
		}
		if err := removeNetns(name); err != nil {
			return err
		}
	}
	return nil
}

func listNetns() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// removeNetns kills the processes in namespace name and deletes it (its
// veth ends go with it, and so their peers).
func removeNetns(name string) error {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, out)
	}
	return nil
}

func (n *Netns) ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
}

// Link joins n and peer with a veth pair, addr (CIDR) on n's end and
// peerAddr on peer's: a direct link between two hosts.
func (n *Netns) Link(t testing.TB, peer *Netns, addr, peerAddr string) {
	t.Helper()
	here, there := "to-"+peer.host, "to-"+n.host
	if out, err := exec.Command("ip", "link", "add", here, "netns", n.Name, "type", "veth", "peer", "name", there, "netns", peer.Name).CombinedOutput(); err != nil {
		t.Fatalf("veth %s-%s: %v: %s", n.Name, peer.Name, err, out)
	}
	n.ip(t, "addr", "add", addr, "dev", here)
	peer.ip(t, "addr", "add", peerAddr, "dev", there)
	n.ip(t, "link", "set", here, "up")
	peer.ip(t, "link", "set", there, "up")
}

// Command is name run inside n (ip netns exec, which execs it: the pid is
// the command's).
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Listen listens inside n: the socket belongs to the namespace it was
// made in, whichever thread uses it later.
func (n *Netns) Listen(network, addr string) (ln net.Listener, err error) {
	err = n.do(func() error {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// DialContext dials from inside n, for an http.Transport of a client on
// that host.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = n.do(func() error {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// do runs fn on a thread of its own moved into n. The thread goes back to
// this process's namespace after; if it cannot, it stays locked and ends
// with its goroutine, so no other goroutine runs in the wrong namespace
// (and Go never starts new threads from a locked one).
func (n *Netns) do(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- err
			return
		}
		defer self.Close()
		target, err := os.Open("/run/netns/" + n.Name)
		if err != nil {
			done <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("leave %s: %w", n.Name, err) // the thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}
