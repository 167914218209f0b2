//go:build linux

package sandbox_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
