//go:build linux

package sandbox_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
// with the limits set and without, and twenty `sleep`s under a shell
// (-20: the /proc walk grows with the processes). cpu-ms/op covers this process, the
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
		{"procs-20", sandbox.Limits{Memory: 2 << 30, Processes: 512}},
		{"none-20", sandbox.Limits{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			args := []string{"/bin/sleep", "1"}
			if strings.HasSuffix(c.name, "-20") { // a build of 21 processes
				args = []string{"/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 1 & done; wait"}
			}
			spec := sandbox.Spec{Args: args, Source: source, Dest: dest, Limits: c.lim}
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

// BenchmarkToolBuild is issue 27 item 5's goal measured on real builds:
// python -m build (sdist and wheel, without isolation) and R CMD build of
// the example packages, bare and in the sandbox, without limits and with
// the worker's default ones (whose watch costs CPU), each on a fresh copy
// of the package. tool-cpu-ms/op is the CPU of the tool's own processes,
// as the shell that ran it counts its children (`times`): what the
// sandbox makes the tool itself spend. cpu-ms/op is everything the run
// took, the launch and the launcher's watch included, read once the
// launcher has reaped the build (its count stops moving: it reaps the
// last processes a moment after the run returns).
func BenchmarkToolBuild(b *testing.B) {
	python := need(b, "python3")
	if p, err := exec.LookPath("/usr/bin/python3"); err == nil {
		python = p
	}
	rBin := need(b, "R")
	tools := []struct {
		name, example string
		args          func(src, dest string) []string
	}{
		{"python", "../../examples/python/hellofleet-py", func(src, dest string) []string {
			return []string{python, "-m", "build", "--sdist", "--wheel", "--no-isolation", "--outdir", dest, src}
		}},
		{"r", "../../examples/r/hellofleet", func(src, _ string) []string {
			return []string{rBin, "CMD", "build", "--no-build-vignettes", "--no-manual", src}
		}},
	}
	defaults := sandbox.Limits{Timeout: time.Hour, Memory: 4 << 30, Processes: 1024, Disk: 8 << 30, Output: 4 << 20}
	for _, tool := range tools {
		cfg, source, dest := benchDirs(b)
		r, err := sandbox.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		env := []string{"PATH=/usr/bin:/bin", "HOME=" + dest, "SOURCE_DATE_EPOCH=1700000000"}
		// The tool under a shell that says, last, what its children spent.
		timed := func(src string) []string {
			return append([]string{"/bin/sh", "-c", `"$@"; rc=$?; times; exit $rc`, "sh"}, tool.args(src, dest)...)
		}
		fresh := func(b *testing.B) string {
			src := filepath.Join(source, "pkg")
			if err := errors.Join(os.RemoveAll(src), os.RemoveAll(dest), os.CopyFS(src, os.DirFS(tool.example))); err != nil {
				b.Fatal(err)
			}
			mkdirOpen(b, dest)
			return src
		}
		variants := []struct {
			name string
			run  func(src string) (string, error)
		}{
			{"bare", func(src string) (string, error) {
				args := timed(src)
				cmd := exec.Command(args[0], args[1:]...)
				cmd.Env, cmd.Dir = env, dest
				out, err := cmd.CombinedOutput()
				return string(out), err
			}},
			{"sandbox", nil},
			{"sandbox-limits", nil},
		}
		for i, lim := range []sandbox.Limits{{Timeout: time.Hour}, defaults} {
			variants[i+1].run = func(src string) (string, error) {
				var out strings.Builder
				res, err := r.Run(context.Background(), sandbox.Spec{Args: timed(src), Env: env, Dir: dest,
					Source: source, Dest: dest, Output: &out, Limits: lim})
				if err == nil && !res.Success() {
					err = fmt.Errorf("%+v", res)
				}
				return out.String(), err
			}
		}
		for _, v := range variants {
			b.Run(tool.name+"/"+v.name, func(b *testing.B) {
				var cpu, toolCPU time.Duration
				for b.Loop() {
					src := fresh(b)
					start := cpuTime()
					out, err := v.run(src)
					cpu += settledCPU() - start
					if err != nil {
						b.Fatalf("%v\n%s", err, out)
					}
					toolCPU += childrenTimes(b, out)
				}
				b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
				b.ReportMetric(float64(toolCPU)/float64(time.Millisecond)/float64(b.N), "tool-cpu-ms/op")
			})
		}
	}
}

// timesLine is a line of the shell's `times`: user and system time.
var timesLine = regexp.MustCompile(`^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$`)

// childrenTimes reads the CPU of a shell's children from the last line of
// out, its `times` (the line before is the shell's own).
func childrenTimes(b *testing.B, out string) time.Duration {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	m := timesLine.FindStringSubmatch(strings.TrimSpace(lines[len(lines)-1]))
	if m == nil {
		b.Fatalf("no times line at the end of\n%s", out)
	}
	var d time.Duration
	for _, mins := range []int{1, 3} {
		min, _ := strconv.Atoi(m[mins])
		sec, _ := strconv.ParseFloat(m[mins+1], 64)
		d += time.Duration(min)*time.Minute + time.Duration(sec*float64(time.Second))
	}
	return d
}

// settledCPU is cpuTime once it has moved less than 2 ms in 50 ms (at
// most 2 s): its own reads of /proc are all that moves it then.
func settledCPU() time.Duration {
	last := cpuTime()
	for range 40 {
		time.Sleep(50 * time.Millisecond)
		now := cpuTime()
		if now-last < 2*time.Millisecond {
			return now
		}
		last = now
	}
	return last
}
