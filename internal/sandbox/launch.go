//go:build linux

package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// This file is stage A's side of the launcher (launcher.go): starting it,
// handing it builds, and the per-build control socket.

// launcherIdle is how long a launcher with no build waits before the
// worker lets it go; the next build starts a new one (one Go start).
const launcherIdle = 30 * time.Second

// launcher is the worker's handle on one launcher process.
type launcher struct {
	sock   int           // the worker's end of the request socket (SOCK_SEQPACKET)
	exited chan struct{} // closed once the process is gone
}

func (l *launcher) gone() bool {
	select {
	case <-l.exited:
		return true
	default:
		return false
	}
}

// acquireLauncher returns the runner's launcher, starting one if there is
// none (or it died), and counts a build on it until releaseLauncher.
func (n *Namespaces) acquireLauncher() (*launcher, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.idle != nil {
		n.idle.Stop()
		n.idle = nil
	}
	if n.launcher == nil || n.launcher.gone() {
		l, err := n.startLauncher()
		if err != nil {
			return nil, err
		}
		n.launcher = l
	}
	n.busy++
	return n.launcher, nil
}

// releaseLauncher ends a build's use of l; an idle launcher is let go
// after launcherIdle.
func (n *Namespaces) releaseLauncher(l *launcher) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.busy--
	if n.busy > 0 || n.launcher != l {
		return
	}
	n.idle = time.AfterFunc(launcherIdle, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.busy == 0 && n.launcher == l {
			unix.Close(l.sock) // the launcher exits at EOF
			n.launcher = nil
		}
	})
}

// startLauncher starts /proc/self/exe as the launcher: as runUID from its
// first instruction, with root's supplementary groups dropped, in a
// session of its own, with an empty environment, dying with the worker.
func (n *Namespaces) startLauncher() (*launcher, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: launcher socket: %w", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "launcher")
	defer theirs.Close()
	cmd := &exec.Cmd{
		Path: n.selfPath,
		// argv[0] marks the launcher; it carries nothing else, since builds
		// can read /proc/1/cmdline (stage B is a clone of the launcher).
		Args:       []string{launcherArg0},
		Env:        []string{},
		Dir:        "/",
		Stderr:     os.Stderr, // the launcher's own failures, never a build's output
		ExtraFiles: []*os.File{theirs},
		SysProcAttr: &syscall.SysProcAttr{
			Setsid: true,
			// With the worker gone nothing may stay: the launcher's death
			// kills every stage B (their parent-death signal), and with
			// each its whole PID namespace.
			Pdeathsig: syscall.SIGKILL,
		},
	}
	if n.asRoot {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(n.runUID), Gid: uint32(n.runGID), Groups: []uint32{}}
	}
	l := &launcher{sock: fds[0], exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the forking thread exits (golang/go#27505):
		// keep this goroutine on its thread until the launcher is reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(l.exited)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("sandbox: start launcher: %w", err)
	}
	return l, nil
}

// launch hands the launcher a build: its end of the control socket, the
// output pipe's write end and, with a door, the launcher's end of its
// socket pair. The worker's copies are closed afterwards by the caller.
func (l *launcher) launch(files ...*os.File) error {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	for {
		err := unix.Sendmsg(l.sock, []byte{0}, unix.UnixRights(fds...), nil, unix.MSG_NOSIGNAL)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// control is stage A's end of one build's control socket.
type control struct {
	conn   *net.UnixConn
	theirs *os.File // the launcher's end, until handed over

	mu     sync.Mutex
	pidfd  int // stage B, once the launcher has cloned it; -1 before
	killed bool
}

func newControl() (*control, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	mine := os.NewFile(uintptr(fds[0]), "control")
	defer mine.Close()
	c, err := net.FileConn(mine)
	if err != nil {
		unix.Close(fds[1])
		return nil, err
	}
	return &control{conn: c.(*net.UnixConn), theirs: os.NewFile(uintptr(fds[1]), "control-launcher"), pidfd: -1}, nil
}

func (c *control) close() {
	c.conn.Close()
	c.theirs.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
		c.pidfd = -1
	}
}

// kill SIGKILLs the build's PID 1, now or as soon as the launcher names
// it: the kernel then kills every process in its namespace.
func (c *control) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.killed = true
	if c.pidfd >= 0 {
		_ = unix.PidfdSendSignal(c.pidfd, unix.SIGKILL, nil, 0)
	}
}

func (c *control) started(pidfd int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pidfd >= 0 {
		unix.Close(c.pidfd) // an earlier attempt's, gone
	}
	c.pidfd = pidfd
	if c.killed {
		_ = unix.PidfdSendSignal(c.pidfd, unix.SIGKILL, nil, 0)
	}
}

// send writes the settings. With a dead man's switch (hc.DeadMan) it then
// writes a keepalive byte every DeadMan/4 until done, skipping those while
// paused.
func (c *control) send(hc *launchSettings, done <-chan struct{}, paused *atomic.Bool) {
	if err := json.NewEncoder(c.conn).Encode(hc); err != nil || hc.DeadMan <= 0 {
		return
	}
	t := time.NewTicker(hc.DeadMan / 4)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if paused.Load() {
			continue
		}
		if _, err := c.conn.Write([]byte{'.'}); err != nil {
			return
		}
	}
}

// collect reads the launcher's side in the background: each pidfd as it
// comes, then the report, which arrives on reported at EOF.
func (c *control) collect() (reported <-chan []byte) {
	rep := make(chan []byte, 1)
	go func() {
		var body []byte
		buf, oob := make([]byte, 32<<10), make([]byte, unix.CmsgSpace(4))
		for {
			n, oobn, _, _, err := c.conn.ReadMsgUnix(buf, oob)
			n, oobn = max(n, 0), max(oobn, 0)
			data := buf[:n]
			if fds := receivedFds(oob[:oobn]); len(fds) > 0 {
				c.started(fds[0])
				closeFds(fds[1:])
				if len(data) > 0 && data[0] == 'P' {
					data = data[1:]
				}
			}
			body = append(body, data...)
			if err != nil || (n == 0 && oobn == 0) {
				break
			}
		}
		rep <- body
	}()
	return rep
}

// copyOutput copies the build's output to out; copied closes at its end,
// once every process that held the pipe is gone.
func copyOutput(r io.Reader, out io.Writer) (copied <-chan struct{}) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, r)
		close(done)
	}()
	return done
}
