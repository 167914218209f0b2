//go:build linux

package sandbox_test

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// The launch benchmarks (issue 3, item 9) time one `/bin/true` three ways:
// a bare fork+exec, Namespaces.Run, and bubblewrap with the same
// namespaces (user ×2, mount, PID, IPC, UTS, network) and the same mounts.
// scripts/bench-sandbox.sh runs them together and prints the ratios.
// Each also reports "cpu-ms/op": the CPU time of the benchmark process and
// of every process it reaped or still runs (the sandbox's launcher and
// through it every build's processes, bwrap and its children), which a
// loaded machine distorts far less than wall time.

func benchDirs(b *testing.B) (cfg sandbox.Config, source, dest string) {
	base := mkdirOpen(b, b.TempDir())
	mkdirOpen(b, filepath.Dir(base))
	cfg = sandbox.Config{
		DataDir:   filepath.Join(base, "data"),
		ConfigDir: filepath.Join(base, "config"),
		TempDir:   mkdirOpen(b, filepath.Join(base, "tmp")),
	}
	return cfg, mkdirOpen(b, filepath.Join(base, "src")), mkdirOpen(b, filepath.Join(base, "dest"))
}

// cpuTime is the CPU time used so far by this process and its reaped
// descendants, and by its live children with theirs: the sandbox's
// launcher lives across launches and reaps every build's processes.
func cpuTime() time.Duration { return testenv.TreeCPU() }

// reportCPU adds cpu-ms/op for the launches since start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

func BenchmarkLaunchBare(b *testing.B) {
	defer reportCPU(b, cpuTime())
	for b.Loop() {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLaunchSandbox(b *testing.B) {
	cfg, source, dest := benchDirs(b)
	r, err := sandbox.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	spec := sandbox.Spec{Args: []string{"/bin/true"}, Source: source, Dest: dest}
	defer reportCPU(b, cpuTime())
	for b.Loop() {
		res, err := r.Run(context.Background(), spec)
		if err != nil || !res.Success() {
			b.Fatalf("%+v %v", res, err)
		}
	}
}

func BenchmarkLaunchBwrap(b *testing.B) {
	bwrap := need(b, "bwrap")
	cfg, source, dest := benchDirs(b)
	tmp := mkdirOpen(b, filepath.Join(cfg.TempDir, "ws"))
	args := []string{"--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
		"--disable-userns", "--die-with-parent", "--new-session"}
	// The same system directories as the sandbox binds (symlinks stay symlinks).
	for _, d := range []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"} {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(d)
			args = append(args, "--symlink", target, d)
		case fi.IsDir():
			args = append(args, "--ro-bind", d, d)
		}
	}
	args = append(args, "--proc", "/proc", "--dev", "/dev", "--bind", source, source, "--bind", dest, dest,
		"--bind", tmp, tmp, "--setenv", "TMPDIR", tmp, "--chdir", source, "--", "/bin/true")
	defer reportCPU(b, cpuTime())
	for b.Loop() {
		if out, err := exec.Command(bwrap, args...).CombinedOutput(); err != nil {
			b.Fatalf("bwrap: %v\n%s", err, out)
		}
	}
}

// BenchmarkToolSlowdown measures where a build tool's slowdown inside the
// sandbox goes (issue 27 item 5): testdata/slowdown/suspects.py times one
// operation of each kind a tool makes (pure CPU, the cheapest system call,
// path lookups through the binds, opens in /etc, /dev and /proc) in its
// own CPU time, run bare, under the sandbox's seccomp filter alone, under
// its Landlock domain alone, and in the whole sandbox. Each sub-benchmark
// reports "<operation>-ns" per operation; the differences between them
// attribute the cost to a suspect (the mounts and namespaces are what the
// whole sandbox adds over both confinements).
func BenchmarkToolSlowdown(b *testing.B) {
	// The system's python3, the one builds use, not a shim on this PATH.
	python := need(b, "python3")
	if p, err := exec.LookPath("/usr/bin/python3"); err == nil {
		python = p
	}
	cfg, source, dest := benchDirs(b)
	script, err := os.ReadFile("testdata/slowdown/suspects.py")
	if err != nil {
		b.Fatal(err)
	}
	inSource := filepath.Join(source, "suspects.py")
	if err := os.WriteFile(inSource, script, 0o644); err != nil {
		b.Fatal(err)
	}
	r, err := sandbox.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	env := []string{"PATH=/usr/bin:/bin", "SUSPECT_N=" + cmp.Or(os.Getenv("SUSPECT_N"), "50000")}
	confined := func(what string) func() (string, error) {
		return func() (string, error) {
			cmd := exec.Command(os.Args[0], python, inSource)
			cmd.Env = append([]string{"PKGFLEET_BENCH_CONFINE=" + what}, env...)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
	}
	variants := []struct {
		name string
		run  func() (string, error)
	}{
		{"bare", func() (string, error) {
			cmd := exec.Command(python, inSource)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			return string(out), err
		}},
		{"seccomp", confined("seccomp")},
		{"landlock", confined("landlock")},
		{"sandbox", func() (string, error) {
			var out strings.Builder
			res, err := r.Run(context.Background(), sandbox.Spec{Args: []string{python, inSource}, Env: env,
				Source: source, Dest: dest, Output: &out})
			if err == nil && !res.Success() {
				err = fmt.Errorf("%+v", res)
			}
			return out.String(), err
		}},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			sums := map[string]float64{}
			for b.Loop() {
				out, err := v.run()
				if err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
				for line := range strings.Lines(out) {
					name, ns, ok := strings.Cut(strings.TrimSpace(line), " ")
					f, err := strconv.ParseFloat(ns, 64)
					if !ok || err != nil {
						b.Fatalf("unexpected line %q in\n%s", line, out)
					}
					sums[name] += f
				}
			}
			for name, sum := range sums {
				b.ReportMetric(sum/float64(b.N), name+"-ns")
			}
		})
	}
}

// BenchmarkWatcherCost measures the CPU the launcher's limit watch
// (limits.go: a /proc walk every 50 ms, a walk of Dest and TMPDIR every
// 500 ms) adds to a build, which the package-build comparisons count
// against the sandbox: one second of `sleep` with 2,000 files in Dest,
// with the limits set and without. cpu-ms/op covers this process, the
// launcher and the build.
func BenchmarkWatcherCost(b *testing.B) {
	cfg, source, dest := benchDirs(b)
	for i := range 2000 {
		dir := filepath.Join(dest, strconv.Itoa(i%20))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), []byte("x"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	r, err := sandbox.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		lim  sandbox.Limits
	}{
		{"none", sandbox.Limits{}},
		{"procs", sandbox.Limits{Memory: 2 << 30, Processes: 512}},
		{"disk", sandbox.Limits{Disk: 4 << 30}},
		{"limits", sandbox.Limits{Memory: 2 << 30, Processes: 512, Disk: 4 << 30}},
	} {
		b.Run(c.name, func(b *testing.B) {
			spec := sandbox.Spec{Args: []string{"/bin/sleep", "1"}, Source: source, Dest: dest, Limits: c.lim}
			defer reportCPU(b, cpuTime())
			for b.Loop() {
				res, err := r.Run(context.Background(), spec)
				if err != nil || !res.Success() {
					b.Fatalf("%+v %v", res, err)
				}
			}
		})
	}
}

// TestSlowdownConfinementsApply keeps BenchmarkToolSlowdown honest in an
// ordinary run: its "seccomp" run is under a filter (Seccomp: 2 in
// /proc/self/status) and its "landlock" run in a domain that scopes
// signals (a kill of the test process outside it is refused, from
// Landlock ABI 6 on).
func TestSlowdownConfinementsApply(t *testing.T) {
	run := func(what, script string) string {
		cmd := exec.Command(os.Args[0], "/bin/sh", "-c", script)
		cmd.Env = []string{"PKGFLEET_BENCH_CONFINE=" + what, "PATH=/usr/bin:/bin"}
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := run("seccomp", "grep '^Seccomp:' /proc/self/status"); !strings.Contains(out, "Seccomp:\t2") {
		t.Errorf("the seccomp run is not filtered: %q", out)
	}
	out := run("landlock", fmt.Sprintf("kill -0 %d && echo SIGNALLED; echo RAN", os.Getpid()))
	if !strings.Contains(out, "RAN") {
		t.Fatalf("the landlock run did not run: %q", out)
	}
	// Signals are scoped from Landlock ABI 6 (Linux 6.12) on.
	if sandbox.KernelLandlockABI() >= 6 && strings.Contains(out, "SIGNALLED") {
		t.Errorf("the landlock run signalled the test process from its domain: %q", out)
	}
}
