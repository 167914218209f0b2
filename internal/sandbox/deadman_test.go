//go:build linux

package sandbox_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// The dead man's switch (Spec.DeadMan, issue 18 item 2): a build whose
// worker stops renewing it is killed by the sandbox's launcher, a separate
// process, while the worker itself may be stopped.

const deadMan = 2 * time.Second

// heldSleeps runs a build holding two sleeps with the dead man's switch
// on, and returns the sleeps' host pids and the build's end.
func (e *env) heldSleeps() (pids []int, ended <-chan sandbox.Result) {
	e.t.Helper()
	marker := newMarker()
	pr, pw := io.Pipe()
	done := make(chan sandbox.Result, 1)
	go func() {
		res, err := e.r.Run(context.Background(), sandbox.Spec{
			Args:   []string{"/bin/sh", "-c", "sleep " + marker + " & echo started; sleep " + marker},
			Source: e.source, Output: pw, DeadMan: deadMan,
		})
		if err != nil {
			e.t.Errorf("Run: %v", err)
		}
		pw.Close()
		done <- res
	}()
	sc := bufio.NewScanner(pr)
	for sc.Scan() && sc.Text() != "started" {
	}
	go io.Copy(io.Discard, pr)
	if pids = hostPids(marker); len(pids) == 0 {
		e.t.Fatal("build process not found on the host")
	}
	return pids, done
}

func TestDeadManSwitchKillsAnUnrenewedBuild(t *testing.T) {
	e := setup(t)
	pids, ended := e.heldSleeps()
	e.r.PauseKeepalives(true)
	for _, pid := range waitGone(t, pids, time.Minute) {
		t.Errorf("build process %d still runs a minute after its worker stopped renewing it", pid)
	}
	res := <-ended
	if res.Killed != "deadman" || !strings.Contains(res.Detail, "the worker stopped renewing this build for 2s") {
		t.Errorf("result %+v, want Killed deadman and a Detail that says why", res)
	}
	if res.Success() || res.ExitStatus() != 137 {
		t.Errorf("a build killed by the dead man's switch looks like %+v (exit status %d)", res, res.ExitStatus())
	}
}

func TestDeadManSwitchSparesARenewedBuild(t *testing.T) {
	e := setup(t)
	// Twice the switch's interval: only the worker's renewals keep it alive.
	res, out := e.sh("sleep 4 && echo finished", func(s *sandbox.Spec) { s.DeadMan = deadMan })
	if !res.Success() || res.Killed != "" || !strings.Contains(out, "finished") {
		t.Errorf("a renewed build did not finish: %+v %q", res, out)
	}
}

// TestDeadManSwitchKillsTheBuildOfAStoppedWorker stops a whole worker
// process (SIGSTOP): its build dies while it is stopped, and the worker,
// resumed, reports why.
func TestDeadManSwitchKillsTheBuildOfAStoppedWorker(t *testing.T) {
	e := setup(t)
	w := e.startWorker(deadMan)
	if err := w.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for _, pid := range waitGone(t, w.pids, time.Minute) {
		t.Errorf("build process %d still runs a minute after its worker stopped", pid)
	}
	// The worker was stopped all along: the launcher alone ended the build.
	if st := procState(t, w.cmd.Process.Pid); st != "T" {
		t.Errorf("worker state %q, want T (stopped) while its build was killed", st)
	}
	if err := w.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var ended string
	for w.out.Scan() {
		if line, ok := strings.CutPrefix(w.out.Text(), "ended "); ok {
			ended = line
			break
		}
	}
	if !strings.Contains(ended, `killed="deadman"`) || !strings.Contains(ended, "stopped renewing this build for 2s") {
		t.Errorf("the resumed worker reported %q, want the dead man's switch named", ended)
	}
}

// procState is the one-letter state of a process (R, S, T, Z …).
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return strings.SplitN(rest, " ", 2)[0]
}
