package git

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
)

// The connector is how git's ssh and git:// transports reach the
// operation's outbound proxy: git runs it as core.gitProxy (git://, with
// the remote's host and port as its arguments) and ssh runs it as its
// ProxyCommand (no arguments: the target is the repository's host, fixed
// before git starts). It is the binary that runs git, re-executed: Init,
// at the start of main, turns the process into the connector when git's
// environment names a proxy in connectEnv.
//
// It asks the proxy to CONNECT to its target, so the policy checks every
// host git connects to, a git:// submodule's too, and then copies both
// ways, half-closing: when git closes the connector's input, the
// socket's write side is shut down (a protocol v2 git:// server waits for
// that end before it hangs up); when the remote's side ends, the
// connector closes its output and exits.
const (
	connectEnv   = "PKGFLEET_GIT_CONNECT"    // the proxy's 127.0.0.1:port
	sshTargetEnv = "PKGFLEET_GIT_SSH_TARGET" // ssh's host:port ("": none allowed)
)

var initCalled atomic.Bool

// Init runs the connector and exits when this process was started as
// one; otherwise it returns at once. Call it at the start of main (and
// TestMain) of every program that runs git through a Client: without it
// ssh and git:// remotes are refused.
func Init() {
	if proxy, ok := os.LookupEnv(connectEnv); ok {
		err := connect(proxy, connectTarget(os.Args[1:]), os.Stdin, os.Stdout)
		if err != nil {
			fmt.Fprintln(os.Stderr, "pkgfleet git connector:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	initCalled.Store(true)
}

// connectTarget is the host:port the connector was asked for: git's
// arguments (git://), else the ssh target of the environment.
func connectTarget(args []string) string {
	if len(args) == 2 {
		return net.JoinHostPort(args[0], args[1])
	}
	return os.Getenv(sshTargetEnv)
}

// connector is the command that starts the connector (its path), and an
// error when it cannot be started: Init was not called, or the path
// would need quoting in ssh's ProxyCommand.
func connector() (string, error) {
	if !initCalled.Load() {
		return "", errors.New("the git connector is unavailable: git.Init was not called at the start of main (or TestMain)")
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("git connector: %w", err)
	}
	if !plainPath.MatchString(exe) {
		return "", fmt.Errorf("git connector: the program's path %q has characters a shell would read", exe)
	}
	return exe, nil
}

var (
	plainPath = regexp.MustCompile(`^[A-Za-z0-9/._+-]+$`)
	// targetHost is what a host may look like in a CONNECT request line.
	targetHost = regexp.MustCompile(`^([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$`)
)

// connect connects in and out to target through the CONNECT proxy at
// proxy, which must be a loopback address: the connector reaches nothing
// else, whatever git asks.
func connect(proxy, target string, in io.Reader, out io.WriteCloser) error {
	ap, err := netip.ParseAddrPort(proxy)
	if err != nil || !ap.Addr().IsLoopback() {
		return fmt.Errorf("%s=%q is not the operation's proxy (a loopback address and port)", connectEnv, proxy)
	}
	if target == "" {
		return errors.New("no target: ssh may reach only the repository's own host")
	}
	if !targetHost.MatchString(target) || strings.HasPrefix(target, "-") {
		return fmt.Errorf("target %q is not a host and port", target)
	}
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(ap))
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("proxy: CONNECT %s: %s", target, resp.Status)
	}
	go func() {
		_, _ = io.Copy(c, in)
		_ = c.CloseWrite() // git is done: the remote sees the end
	}()
	_, err = io.Copy(out, br) // br: what the remote sent after the reply, then the rest
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
