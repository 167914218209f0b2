//go:build containers

package containertest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pkgfleet/pkgfleet/deploy/profiles"
)

// TestSeccompProfileEachAdditionIsNeeded runs a build the way the worker
// runs one (`pkgfleet-worker sandbox exec`) in the worker container, non-root,
// without capabilities, with no-new-privileges, under the shipped seccomp
// profile (it must work), and under the profile without each of the rules
// deploy/profiles adds to the runtime's default (the sandbox must then fail
// at the step the addition names). Both tiers: /proc masked as Docker
// leaves it (masked-proc), and unmasked (full).
func TestSeccompProfileEachAdditionIsNeeded(t *testing.T) {
	image, bin := profileTestWorker(t)
	tiers := []struct {
		name     string
		security []string
		procOpts string // how the build sees its /proc: "ro" bound from the container, "rw" its own
	}{
		{"masked-proc", nil, "ro"},
		{"full", []string{"systempaths=unconfined"}, "rw"},
	}
	dir := t.TempDir()
	for _, tier := range tiers {
		t.Run(tier.name, func(t *testing.T) {
			// run runs cmd in the worker container under the shipped
			// profile without the additions in skip.
			run := func(t *testing.T, cmd []string, skip ...string) (string, int) {
				t.Helper()
				prof, err := profiles.Seccomp(skip...)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(dir, strings.Join(append([]string{tier.name}, skip...), "-")+".json")
				if err := os.WriteFile(path, prof, 0o644); err != nil {
					t.Fatal(err)
				}
				return runProfileWorker(t, image, bin, "seccomp="+path, tier.security, cmd)
			}
			build := []string{"pkgfleet-worker", "sandbox", "exec", "--", "/bin/sh", "-c",
				`awk '$2 == "/proc" {split($4, o, ","); print "proc:" o[1]}' /proc/self/mounts; grep '^Seccomp:' /proc/self/status`}

			t.Run("whole profile", func(t *testing.T) {
				out, code := run(t, build)
				if code != 0 {
					t.Fatalf("sandbox exec under the shipped profile: exit %d\n%s", code, out)
				}
				// The build sees the /proc of the tier, and runs under a filter
				// (the runtime's and the sandbox's own).
				if !strings.Contains(out, "proc:"+tier.procOpts+"\n") || !strings.Contains(out, "Seccomp:\t2") {
					t.Errorf("want proc:%s and Seccomp: 2 in the build:\n%s", tier.procOpts, out)
				}
			})
			for _, a := range profiles.Additions() {
				t.Run("without "+a.Names[0], func(t *testing.T) {
					out, code := run(t, build, a.Names[0])
					if code == 0 {
						t.Fatalf("the sandbox works without %s: the addition is not needed\n%s", a.Names[0], out)
					}
					if want := "sandbox: " + a.Step; !strings.Contains(out, want) {
						t.Errorf("without %s the sandbox fails, but not at %q:\n%s", a.Names[0], want, out)
					}
				})
			}
		})
	}
}

// TestSeccompProfileDeniesOpenByHandleAt: open_by_handle_at, which can
// reach files outside a mount namespace by handle, is refused by the
// shipped profile (as by the runtime's default) both to the worker
// container and to a build in its sandbox. The probe is perl's syscall()
// with a NULL handle: a kernel that gets to read the handle answers
// EFAULT, as it does under seccomp=unconfined (the control), the filter
// answers EPERM before that.
func TestSeccompProfileDeniesOpenByHandleAt(t *testing.T) {
	image, bin := profileTestWorker(t)
	probe := fmt.Sprintf(`$! = 0; syscall(%d, -100, 0, 0); print "errno=", $! + 0, "\n"`, unix.SYS_OPEN_BY_HANDLE_AT)
	cases := []struct {
		name, seccomp string
		cmd           []string
		errno         unix.Errno
	}{
		{"worker container, shipped profile", "seccomp=" + repoPath("deploy", "profiles", "pkgfleet-worker.json"), []string{"perl", "-e", probe}, unix.EPERM},
		{"build in the sandbox, shipped profile", "seccomp=" + repoPath("deploy", "profiles", "pkgfleet-worker.json"),
			[]string{"pkgfleet-worker", "sandbox", "exec", "--", "perl", "-e", probe}, unix.EPERM},
		{"worker container, unconfined (control)", "seccomp=unconfined", []string{"perl", "-e", probe}, unix.EFAULT},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := runProfileWorker(t, image, bin, c.seccomp, nil, c.cmd)
			if want := fmt.Sprintf("errno=%d\n", c.errno); code != 0 || !strings.Contains(out, want) {
				t.Errorf("open_by_handle_at: exit %d, want %s (%v):\n%s", code, strings.TrimSpace(want), c.errno, out)
			}
		})
	}
}

// runProfileWorker runs cmd in the worker container as the chart runs it:
// uid 10001, no capabilities, no-new-privileges, read-only root, no
// network, /proc masked unless security says otherwise.
func runProfileWorker(t *testing.T, image, bin, seccomp string, security, cmd []string) (string, int) {
	t.Helper()
	args := []string{"--user", "10001:10001", "--cap-drop", "ALL",
		"--security-opt", "no-new-privileges", "--read-only", "--network", "none",
		"--tmpfs", "/tmp:rw,exec,nosuid,nodev,mode=1777",
		"--env", "PKGFLEET_SERVER_DATADIR=/tmp/data", "--env", "PKGFLEET_SERVER_SOCKFILEDIR=/tmp/run",
		"--security-opt", seccomp,
		"-v", bin + ":/usr/local/bin/pkgfleet-worker:ro"}
	for _, s := range security {
		args = append(args, "--security-opt", s)
	}
	return runContainer(t, 2*time.Minute, append(append(args, image), cmd...)...)
}

// profileTestWorker returns the Debian 12 base image (scripts/base-image.sh)
// and a static worker binary built from this tree, to bind into it: the
// profile is checked against this tree's sandbox, whatever image was built.
func profileTestWorker(t *testing.T) (image, bin string) {
	t.Helper()
	requireImages(t)
	out, code, err := command(10*time.Minute, root, nil, "bash", repoPath("scripts", "base-image.sh"))
	if err != nil || code != 0 {
		missing(t, "base image (scripts/base-image.sh): exit %d %v\n%s", code, err, out)
	}
	lines := strings.Fields(out)
	image = lines[len(lines)-1] // the tag, after whatever the script logged
	bin = filepath.Join(t.TempDir(), "pkgfleet-worker")
	if out, code, err := command(10*time.Minute, root, []string{"CGO_ENABLED=0"}, "go", "build", "-o", bin, "./cmd/worker"); err != nil || code != 0 {
		t.Fatalf("go build ./cmd/worker: exit %d %v\n%s", code, err, out)
	}
	return image, bin
}
