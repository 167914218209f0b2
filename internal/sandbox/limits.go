//go:build linux

package sandbox

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Limits without cgroup v2 delegation (this is what Result.Enforcement
// "rlimits" means):
//
//   - Processes: RLIMIT_NPROC. Since Linux 5.14 it is counted per user
//     namespace and uid, so the count is this build's alone: every build
//     has its own namespace 2. The launcher also counts tasks and ends the
//     build when it sits at the limit (a fork bomb).
//   - Memory: the launcher sums the private resident memory of the build's
//     processes and ends the build above the limit; RLIMIT_DATA at twice the limit is
//     a per-process backstop against allocations faster than the watch.
//   - Disk: RLIMIT_FSIZE caps every single file; the launcher sums the blocks
//     used in Dest and TMPDIR while the build runs and once at the end.
//
// The launcher watches from outside the namespaces: the build is every
// descendant of its stage B, which the kernel makes the parent of every
// orphan in the PID namespace.
//   - Time: the worker kills PID 1 of the namespace (stage A).
const (
	watchEvery     = 50 * time.Millisecond // a /proc scan per tick; frequent enough to catch bombs
	diskEveryTicks = 10                    // a tree walk every half second
	procStrikes    = 3                     // consecutive samples at the process limit
)

// buildRlimits lists the per-process limits stage C sets, inherited by the build.
func buildRlimits(l Limits) []rlimit {
	rl := []rlimit{{unix.RLIMIT_CORE, unix.Rlimit{}}}
	if l.Processes > 0 {
		rl = append(rl, rlimit{unix.RLIMIT_NPROC, unix.Rlimit{Cur: uint64(l.Processes), Max: uint64(l.Processes)}})
	}
	if l.Memory > 0 {
		backstop := uint64(max(2*l.Memory, l.Memory+512<<20))
		rl = append(rl, rlimit{unix.RLIMIT_DATA, unix.Rlimit{Cur: backstop, Max: backstop}})
	}
	if l.Disk > 0 {
		rl = append(rl, rlimit{unix.RLIMIT_FSIZE, unix.Rlimit{Cur: uint64(l.Disk), Max: uint64(l.Disk)}})
	}
	// Go raised the soft NOFILE limit for itself; builds get the usual default.
	var nofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err == nil && nofile.Cur > 1024 {
		nofile.Cur = 1024
		rl = append(rl, rlimit{unix.RLIMIT_NOFILE, nofile})
	}
	return rl
}

// watcher runs in the launcher and samples the build's processes through
// its /proc.
type watcher struct {
	hc *launchSettings
	sb *sandbox // the build's stage B: its descendants are the build

	mu      sync.Mutex
	killed  string
	detail  string // why, in words, where killed needs it
	procHit bool   // the build sat at its process limit at least once
	strikes int
}

func newWatcher(hc *launchSettings, sb *sandbox) *watcher {
	return &watcher{hc: hc, sb: sb}
}

// limited says whether the build has a limit run watches.
func (w *watcher) limited() bool {
	return w.hc.Limits.Memory > 0 || w.hc.Limits.Processes > 0 || w.hc.Limits.Disk > 0
}

func (w *watcher) run(stop <-chan struct{}) {
	if !w.limited() {
		return
	}
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if reason := w.sample(tick%diskEveryTicks == 0); reason != "" {
			w.kill(reason, "")
			return
		}
	}
}

// kill ends the whole build, naming the first reason it was ended for.
func (w *watcher) kill(reason, detail string) {
	w.mu.Lock()
	if w.killed == "" {
		w.killed, w.detail = reason, detail
	}
	w.mu.Unlock()
	// Killing PID 1 makes the kernel kill every process of the namespace.
	_ = unix.PidfdSendSignal(w.sb.pidfd, unix.SIGKILL, nil, 0)
}

// deadMan is the launcher's side of the dead man's switch (Spec.DeadMan):
// every read from keepalives renews the build, and the build is killed
// once none has come for d. The timer runs on this process's monotonic
// clock, so a stopped or hung worker cannot hold it back. After EOF (the
// worker closed its end) nothing renews the build any more.
func (w *watcher) deadMan(keepalives io.Reader, d time.Duration, stop <-chan struct{}) {
	renewed := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := keepalives.Read(buf); err != nil {
				return
			}
			select {
			case renewed <- struct{}{}:
			default:
			}
		}
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return
		case <-renewed:
			timer.Reset(d)
		case <-timer.C:
			w.kill("deadman", fmt.Sprintf("the worker stopped renewing this build for %s", d))
			return
		}
	}
}

// sample returns the limit exceeded, if any.
func (w *watcher) sample(disk bool) string {
	mem, tasks := procTotals(w.sb.pid)
	if w.hc.Limits.Memory > 0 && mem > w.hc.Limits.Memory {
		return "memory limit " + formatBytes(w.hc.Limits.Memory)
	}
	if w.hc.Limits.Processes > 0 {
		if tasks >= w.hc.Limits.Processes {
			w.mu.Lock()
			w.procHit = true
			w.mu.Unlock()
			w.strikes++
		} else {
			w.strikes = 0
		}
		if w.strikes >= procStrikes {
			return fmt.Sprintf("process limit %d", w.hc.Limits.Processes)
		}
	}
	if disk && w.hc.Limits.Disk > 0 && w.diskUsed() > w.hc.Limits.Disk {
		return "disk limit " + formatBytes(w.hc.Limits.Disk)
	}
	return ""
}

// verdict names the limit that ended the build, if one did, and why in
// words where that needs saying: the watcher's or the dead man's kill,
// or a limit the kernel enforced and the exit status betrays.
func (w *watcher) verdict(res launchReport) (killed, detail string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.killed != "" {
		return w.killed, w.detail
	}
	if w.hc.Limits.Disk > 0 && (res.Signal == "SIGXFSZ" || res.ExitCode == 128+int(unix.SIGXFSZ) || w.diskUsed() >= w.hc.Limits.Disk) {
		return "disk limit " + formatBytes(w.hc.Limits.Disk), ""
	}
	// A failed build that sat at its process limit failed because of it:
	// fork returned EAGAIN. The main process is reaped already, so it
	// counts as one more task than the orphans still alive.
	if failed := res.ExitCode != 0 || res.Signal != ""; failed && w.hc.Limits.Processes > 0 {
		if _, tasks := procTotals(w.sb.pid); w.procHit || tasks+1 >= w.hc.Limits.Processes {
			return fmt.Sprintf("process limit %d", w.hc.Limits.Processes), ""
		}
	}
	return "", ""
}

// diskUsed sums the blocks allocated below Dest and TMPDIR. A hostile
// build must not hide files from it, so it walks by file descriptor
// (openat: no path grows past PATH_MAX however deep the build nests), it
// opens a directory the build made unreadable to its owner (diskDir), and
// a tree nested deeper than maxDiskDepth counts as over any limit.
func (w *watcher) diskUsed() int64 {
	var total int64
	for _, dir := range []string{w.hc.Dest, w.hc.TmpDir} {
		if dir == "" {
			continue
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		n, ok := blocksBelow(fd, maxDiskDepth)
		if !ok {
			return math.MaxInt64
		}
		total += n
	}
	return total
}

// maxDiskDepth bounds how deep the disk watch follows directories (and
// how many descriptors it holds at once); no package build nests this
// deep, so one that does is stopped rather than half counted.
const maxDiskDepth = 256

// blocksBelow sums the bytes allocated to what directory dirfd holds, and
// closes it; false when the tree is deeper than depth.
func blocksBelow(dirfd, depth int) (int64, bool) {
	dir := os.NewFile(uintptr(dirfd), "")
	defer dir.Close()
	var total int64
	for {
		names, err := dir.Readdirnames(512)
		for _, name := range names {
			var st unix.Stat_t
			if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				continue
			}
			total += st.Blocks * 512
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
			if depth == 0 {
				return total, false
			}
			fd, restore, err := diskDir(dirfd, name)
			if err != nil {
				continue
			}
			n, ok := blocksBelow(fd, depth-1)
			restore()
			total += n
			if !ok {
				return total, false
			}
		}
		if err != nil {
			return total, true
		}
	}
}

// diskDir opens directory name of parent for reading. Where a build runs
// as the launcher's own user (the unprivileged tier), mode bits bind the
// launcher too, and a build could hide files behind a directory without
// its owner's read or search bit: such a directory gets u+rx while the
// watch reads it, and restore gives its mode back. The mode is changed
// through an O_PATH descriptor of the directory itself, never by name, so
// a build that swaps the directory for a symlink cannot point the change
// elsewhere.
func diskDir(parent int, name string) (fd int, restore func(), err error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	nothing := func() {}
	var st unix.Stat_t
	if unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&0o500 == 0o500 {
		fd, err = unix.Openat(parent, name, flags, 0)
		return fd, nothing, err
	}
	pfd, err := unix.Openat(parent, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, nothing, err
	}
	if err := unix.Fstat(pfd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		unix.Close(pfd)
		return -1, nothing, fmt.Errorf("%s: not a directory any more", name)
	}
	self := "/proc/self/fd/" + strconv.Itoa(pfd)
	if err := unix.Chmod(self, st.Mode&0o7777|0o500); err != nil {
		unix.Close(pfd)
		return -1, nothing, err
	}
	restore = func() {
		_ = unix.Chmod(self, st.Mode&0o7777)
		unix.Close(pfd)
	}
	if fd, err = unix.Openat(pfd, ".", flags, 0); err != nil {
		restore()
		return -1, nothing, err
	}
	return fd, restore, nil
}

// procTotals sums the private resident memory (anonymous pages: heap and
// stacks, not the shared libraries every process maps) and the tasks of
// every build process: every descendant of root (stage B, PID 1 of the
// namespace, which inherits every orphan, so none escapes the walk), root
// excluded, as the launcher's /proc numbers them. Per process it lists
// /proc/<pid>/task (its threads, each with the children it forked) and
// reads /proc/<pid>/statm, whose resident less shared pages are exactly
// status's RssAnon: the kernel writes statm as seven numbers where
// status is fifty lines, and this walk runs every 50 ms of every build.
func procTotals(root int) (anonBytes int64, tasks int) {
	self := strconv.Itoa(root)
	var buf [128]byte
	queue := []string{self}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		threads := dirNames("/proc/" + pid + "/task")
		if pid != self && len(threads) > 0 {
			tasks += len(threads)
			anonBytes += anonOf(pid, buf[:])
		}
		for _, t := range threads {
			b, err := os.ReadFile("/proc/" + pid + "/task/" + t + "/children")
			if err == nil {
				queue = append(queue, strings.Fields(string(b))...)
			}
		}
	}
	return anonBytes, tasks
}

// dirNames lists dir's entries, unsorted; none when it is gone.
func dirNames(dir string) []string {
	f, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	return names
}

// anonOf is process pid's anonymous resident memory in bytes, from its
// statm ("size resident shared ..." in pages); 0 when it is gone.
func anonOf(pid string, buf []byte) int64 {
	fd, err := unix.Open("/proc/"+pid+"/statm", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	n, err := unix.Read(fd, buf)
	unix.Close(fd)
	if err != nil || n <= 0 {
		return 0
	}
	f := strings.Fields(string(buf[:n]))
	if len(f) < 3 {
		return 0
	}
	resident, err1 := strconv.ParseInt(f[1], 10, 64)
	shared, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || resident < shared {
		return 0
	}
	return (resident - shared) * int64(os.Getpagesize())
}

// withDefaults fills the zero fields of l from the runner's defaults d.
func withDefaults(l, d Limits) Limits {
	if l.Timeout == 0 {
		l.Timeout = d.Timeout
	}
	if l.Memory == 0 {
		l.Memory = d.Memory
	}
	if l.Processes == 0 {
		l.Processes = d.Processes
	}
	if l.Disk == 0 {
		l.Disk = d.Disk
	}
	if l.Output == 0 {
		l.Output = d.Output
	}
	return l
}

// cappedWriter keeps the first left bytes and drops the rest, so that a
// build printing without end cannot fill memory or the log store.
type cappedWriter struct {
	mu   sync.Mutex
	w    io.Writer
	left int64 // <= 0 at start means unlimited
	cut  bool
}

// newCappedWriter keeps the first limit bytes written for w (nil: none),
// all of them when limit is 0.
func newCappedWriter(w io.Writer, limit int64) *cappedWriter {
	if w == nil {
		w = io.Discard
	}
	return &cappedWriter{w: w, left: limit}
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	if c.left == 0 && !c.cut {
		_, err := c.w.Write(p) // unlimited
		return n, err
	}
	if c.cut {
		return n, nil
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
		c.cut = true
	}
	c.left -= int64(len(p))
	if c.left == 0 {
		c.cut = true
	}
	if _, err := c.w.Write(p); err != nil {
		return n, err
	}
	return n, nil
}

func (c *cappedWriter) truncated() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

// formatBytes renders a limit the way build records show it: "2GiB".
func formatBytes(b int64) string {
	for _, u := range []struct {
		n    int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if b >= u.n && b%u.n == 0 {
			return fmt.Sprintf("%d%s", b/u.n, u.name)
		}
	}
	return fmt.Sprintf("%dB", b)
}
