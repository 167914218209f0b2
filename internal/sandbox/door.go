//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// A build without the host network may get one door out: a listener at
// DoorAddr inside its own network namespace, made by the sandbox's PID 1 once lo is
// up. It hands the listening socket to the worker over a socket
// pair (SCM_RIGHTS) and keeps no copy, so the build can connect to it but
// never accept on it; the worker serves it (Spec.Door: internal/door's
// proxy to the package indexes). Nothing else is reachable: the namespace
// has no other interface and no route.

// doorPort is DoorAddr's port.
const doorPort = 3128

// doorway is the worker's end of one build's door.
type doorway struct {
	door   Door
	mine   *os.File // receives the listener
	theirs *os.File // stage B's end, handed over through the launcher
	mu     sync.Mutex
	l      net.Listener
	closed bool
	served sync.WaitGroup
}

// openDoorway prepares the socket pair for spec's door; nil when spec has
// none (or shares the host network, which needs none).
func openDoorway(spec Spec) (*doorway, error) {
	if spec.Door == nil || spec.Network {
		return nil, nil
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: door socket pair: %w", err)
	}
	return &doorway{door: spec.Door, mine: os.NewFile(uintptr(fds[0]), "door"), theirs: os.NewFile(uintptr(fds[1]), "door-launcher")}, nil
}

// serve runs once the launcher has the build: it waits for the listener and
// serves it until close.
func (d *doorway) serve() {
	if d == nil {
		return
	}
	d.theirs.Close()
	d.served.Add(1)
	go func() {
		defer d.served.Done()
		l, err := receiveListener(d.mine)
		if err != nil {
			return // stage B failed before opening the door; its report says why
		}
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			l.Close()
			return
		}
		d.l = l
		d.mu.Unlock()
		_ = d.door.Serve(l)
	}()
}

// close ends the door: no new connection, and (Door's promise) none left.
func (d *doorway) close() {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.closed = true
	if d.l != nil {
		d.l.Close()
	}
	d.mu.Unlock()
	_ = unix.Shutdown(int(d.mine.Fd()), unix.SHUT_RDWR) // wakes a receive still waiting
	d.mine.Close()
	d.theirs.Close()
	d.served.Wait()
}

func receiveListener(f *os.File) (net.Listener, error) {
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(f.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, errors.New("no listener from the sandbox")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, errors.New("no listener from the sandbox")
	}
	lf := os.NewFile(uintptr(fds[0]), "door-listener")
	defer lf.Close()
	return net.FileListener(lf)
}

// directDoor serves spec's door for an unsandboxed build: on a host
// loopback port (nothing is contained there anyway), with DoorAddr in the
// environment replaced by that port's address. It returns the environment
// and a function that ends the door.
func directDoor(spec Spec) ([]string, func(), error) {
	if spec.Door == nil || spec.Network {
		return spec.Env, func() {}, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox: door: %w", err)
	}
	env := make([]string, len(spec.Env))
	for i, kv := range spec.Env {
		env[i] = strings.ReplaceAll(kv, DoorAddr, l.Addr().String())
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = spec.Door.Serve(l)
	}()
	return env, func() { l.Close(); wg.Wait() }, nil
}
