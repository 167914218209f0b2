//go:build linux

package sandbox_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// The masked-proc tier binds the container's /proc, so a build sees every
// process of the container by number. These tests run that tier on any
// host and prove what docs/sandbox.md promises for it: those processes are
// visible and unreachable.

func setupMasked(t *testing.T) *env {
	t.Helper()
	t.Setenv("PKGFLEET_TEST_TIER", string(sandbox.TierMaskedProc))
	e := setup(t)
	if got := e.r.Tier(); got != sandbox.TierMaskedProc {
		t.Fatalf("Tier() = %q, want %q", got, sandbox.TierMaskedProc)
	}
	return e
}

// reached lists the probe's "reach" lines that succeeded; visible tells
// whether the target was there to attack at all.
func reached(out string) (ok []string, visible bool) {
	visible = true
	for _, line := range strings.Split(out, "\n") {
		if strings.HasSuffix(line, " visible: ENOENT") {
			visible = false
		}
		if strings.HasSuffix(line, ": ok") {
			ok = append(ok, line)
		}
	}
	return ok, visible
}

// The worker (this test process) and the sandbox launchers are in view but
// none of their environment, memory, fds, root or cwd is.
func TestMaskedProcKeepsWorkerAndLaunchersUnreadable(t *testing.T) {
	e := setupMasked(t)
	probe := e.probe()
	// The launchers and stage Bs are found by argv (PID 1 of each build namespace is one,
	// this build's included), in the same run that attacks them.
	res, out := e.sh(fmt.Sprintf(`for d in /proc/[0-9]*; do grep -qa '^pkgfleet-sandbox-launcher' $d/cmdline 2>/dev/null && echo LAUNCHER ${d#/proc/} && %s reach ${d#/proc/}; done; %s reach %d`,
		probe, probe, os.Getpid()))
	if !strings.Contains(out, "LAUNCHER") {
		t.Fatalf("no launcher visible in the masked /proc: %+v %q", res, out)
	}
	ok, visible := reached(out)
	if !visible {
		t.Fatalf("the worker is not in view, so nothing was tried: %+v\n%s", res, out)
	}
	if len(ok) > 0 {
		t.Errorf("a build reached the worker or a launcher through /proc: %v\n%s", ok, out)
	}
	// The same calls on itself succeed: the refusals above are the barrier, not breakage.
	_, out = e.run([]string{probe, "reach", "self"})
	if ok, _ := reached(out); len(ok) < 8 {
		t.Errorf("the build cannot even read its own /proc entries:\n%s", out)
	}
}

// Signals and ptrace reach nothing outside the build's PID namespace, even
// by a /proc/<pid> directory used as a pidfd.
func TestMaskedProcSignalsAndPtraceStayInside(t *testing.T) {
	e := setupMasked(t)
	probe := e.probe()
	host := os.Getpid()
	res, out := e.sh(fmt.Sprintf(`kill -0 %d && echo SIGNALLED; %s reach %d`, host, probe, host))
	if strings.Contains(out, "SIGNALLED") || strings.Contains(out, "pidfd_send_signal: ok") {
		t.Errorf("a build signalled the worker: %+v\n%s", res, out)
	}
	_, out = e.run([]string{probe, "syscalls"})
	if !strings.Contains(out, "ptrace: EPERM") {
		t.Errorf("ptrace is not refused:\n%s", out)
	}
}

// Two builds at once: the second finds the first in /proc by its argv and
// can read none of its environment, fds, root or cwd.
func TestMaskedProcBuildsCannotReachEachOther(t *testing.T) {
	e := setupMasked(t)
	probe := e.probe()
	_, release := e.heldBuild(`: FIRST_BUILD_HOLDS; echo TOPSECRET > "$TMPDIR/secret"; echo started`, "started",
		[]string{"PATH=/usr/bin:/bin", "FIRST_BUILD_TOKEN=TOPSECRET"})
	// The marker is split so that the second build's own argv does not match it.
	res, out := e.sh(`m=FIRST_BUILD; for d in /proc/[0-9]*; do grep -qa "${m}_HOLDS" $d/cmdline 2>/dev/null && echo FOUND ${d#/proc/} && ` +
		probe + ` reach ${d#/proc/}; done; cat /proc/*/environ 2>/dev/null | grep -a TOPSECRET`)
	release()
	if !strings.Contains(out, "FOUND") {
		t.Fatalf("the first build is not in view, so nothing was tried: %+v\n%s", res, out)
	}
	if ok, _ := reached(out); len(ok) > 0 || strings.Contains(out, "TOPSECRET") {
		t.Errorf("the second build reached the first: %v\n%s", ok, out)
	}
}

// Landlock's file rules would make a rename or link across directories
// fail with EXDEV (setuptools moves its sdist so): builds must not notice
// their domain, whichever form it takes on this kernel or an older one.
func TestRenameAcrossDirectoriesWorksInEveryLandlockForm(t *testing.T) {
	for _, abi := range []int{0, 2, 1} { // the kernel's (scopes), file rules with refer, none
		t.Run(fmt.Sprintf("abi-%d", abi), func(t *testing.T) {
			t.Setenv("PKGFLEET_TEST_TIER", "")
			e := setup(t)
			e.cfg.MaxLandlockABI = abi
			r, err := sandbox.New(e.cfg)
			if abi == 1 && err != nil && strings.Contains(err.Error(), "Landlock") {
				// Where /proc is masked (a container) only masked-proc works, and it
				// refuses ABI 1: TestMaskedProcOnOlderLandlock holds that.
				t.Skipf("masked-proc refuses Landlock ABI 1 here: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			e.r = r
			res, out := e.sh(`mkdir -p "$TMPDIR/a" "$TMPDIR/b" && echo x > "$TMPDIR/a/f" && mv "$TMPDIR/a/f" "$TMPDIR/b/f" && ln "$TMPDIR/b/f" "$TMPDIR/a/g" && mv "$TMPDIR/b/f" ` + e.dest + `/f && echo RENAMED`)
			if !res.Success() || !strings.Contains(out, "RENAMED") {
				t.Errorf("rename across directories failed: %+v\n%q", res, out)
			}
		})
	}
}

// On kernels whose Landlock lacks scopes (ABI 2 to 5) the domain is made
// of file rules; it must keep builds out of each other all the same, and
// ABI 1 must refuse the masked-proc tier rather than break renames.
func TestMaskedProcOnOlderLandlock(t *testing.T) {
	t.Setenv("PKGFLEET_TEST_TIER", string(sandbox.TierMaskedProc))
	e := setup(t)
	e.cfg.MaxLandlockABI = 2
	r, err := sandbox.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.r = r
	probe := e.probe()
	res, out := e.sh(fmt.Sprintf(`%s reach %d`, probe, os.Getpid()))
	if ok, visible := reached(out); !visible || len(ok) > 0 {
		t.Errorf("with Landlock ABI 2 a build reached the worker (visible %v): %v\n%+v\n%s", visible, ok, res, out)
	}
	e.cfg.MaxLandlockABI = 1
	if _, err := sandbox.New(e.cfg); err == nil || !strings.Contains(err.Error(), "Landlock") {
		t.Errorf("masked-proc with Landlock ABI 1: %v, want a refusal naming Landlock", err)
	}
}
