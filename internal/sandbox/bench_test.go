//go:build linux

package sandbox_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
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
func cpuTime() time.Duration {
	var self, children unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &self)
	_ = unix.Getrusage(unix.RUSAGE_CHILDREN, &children)
	var total time.Duration
	for _, tv := range []unix.Timeval{self.Utime, self.Stime, children.Utime, children.Stime} {
		total += time.Duration(tv.Nano())
	}
	return total + liveChildrenCPU()
}

// liveChildrenCPU sums utime, stime, cutime and cstime of this process's
// live children (/proc/<pid>/stat, in clock ticks of 10 ms).
func liveChildrenCPU() time.Duration {
	var total time.Duration
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		for _, pid := range strings.Fields(string(b)) {
			stat, err := os.ReadFile("/proc/" + pid + "/stat")
			if err != nil {
				continue
			}
			_, rest, _ := strings.Cut(string(stat), ") ")
			f := strings.Fields(rest)                 // from field 3, state
			for _, i := range []int{11, 12, 13, 14} { // utime, stime, cutime, cstime
				if i < len(f) {
					ticks, _ := strconv.ParseInt(f[i], 10, 64)
					total += time.Duration(ticks) * 10 * time.Millisecond
				}
			}
		}
	}
	return total
}

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
