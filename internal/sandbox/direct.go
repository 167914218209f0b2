//go:build linux

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Direct runs commands without isolation, for Git.AllowUnsandboxedGitBuilds.
// It still applies the wall-clock and output limits, gives each command its
// own TMPDIR, and kills the command's whole process group when it ends.
type Direct struct {
	cfg Config
}

// NewDirect returns an unsandboxed runner.
func NewDirect(cfg Config) *Direct { return &Direct{cfg: cfg} }

// Mode implements Runner.
func (d *Direct) Mode() string { return "unsandboxed" }

// Run implements Runner.
func (d *Direct) Run(ctx context.Context, spec Spec) (Result, error) {
	if len(spec.Args) == 0 {
		return Result{}, errors.New("sandbox: empty command")
	}
	lim := withDefaults(spec.Limits, d.cfg.Defaults)
	tmp, err := newWorkspace(d.cfg.TempDir)
	if err != nil {
		return Result{}, err
	}
	defer removeWorkspace(tmp)

	if lim.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lim.Timeout)
		defer cancel()
	}
	env, closeDoor, err := directDoor(spec)
	if err != nil {
		return Result{}, err
	}
	defer closeDoor()
	cmd := exec.Command(spec.Args[0], spec.Args[1:]...)
	cmd.Env = envWithTMPDIR(env, tmp)
	cmd.Dir = spec.Dir
	out := newCappedWriter(spec.Output, lim.Output)
	cmd.Stdout, cmd.Stderr = out, out
	// A process group of its own, so that ending the command ends
	// everything it forked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("start %s: %w", spec.Args[0], err)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		case <-done:
		}
	}()
	waitErr := cmd.Wait()
	close(done)
	// Reap stragglers that left the group leader behind.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)

	res := Result{Enforcement: "unsandboxed", OutputTruncated: out.truncated(), Duration: time.Since(start)}
	res.ExitCode, res.Signal = exitStatus(cmd.ProcessState)
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && lim.Timeout > 0:
		res.Killed, res.ExitCode = "timeout "+lim.Timeout.String(), -1
	case ctx.Err() != nil:
		res.Killed, res.ExitCode = "canceled", -1
	}
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		return res, fmt.Errorf("wait %s: %w", spec.Args[0], waitErr)
	}
	return res, nil
}

func exitStatus(ps *os.ProcessState) (int, string) {
	if ps == nil {
		return -1, ""
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1, unixSignalName(ws.Signal())
	}
	return ps.ExitCode(), ""
}

// unixSignalName names a signal the way Result.Signal shows it: "SIGKILL".
func unixSignalName(s syscall.Signal) string {
	if name := unix.SignalName(s); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(s))
}
