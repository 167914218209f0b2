//go:build linux

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NamespacesPerBuild is how many user namespaces one running build holds:
// the outer one that owns the mount tree and the nested one the build runs
// in. Size /proc/sys/user/max_user_namespaces with it (docs/sandbox.md).
const NamespacesPerBuild = 2

// ErrNamespaceLimit is wrapped by Run and New when the kernel refused a new
// user namespace because /proc/sys/user/max_user_namespaces (or the nesting
// depth) was exhausted. Callers count these as "namespace_limit" failures.
var ErrNamespaceLimit = errors.New("user namespace limit reached: raise /proc/sys/user/max_user_namespaces")

// ErrUnavailable is wrapped by New when user namespaces cannot be used at
// all on this host (disabled, blocked by seccomp or AppArmor, or Init was
// not called).
var ErrUnavailable = errors.New("user namespace sandbox unavailable")

// Namespaces is the user-namespace runner. It is safe for concurrent use.
type Namespaces struct {
	cfg      Config
	masks    []string // host paths hidden from every build, symlinks resolved too
	asRoot   bool     // the worker is root: drop to runUID before any namespace
	runUID   int      // host uid the sandbox processes run as
	runGID   int
	inUse    atomic.Int64
	selfPath string
	tier     Tier // what New found working

	keepalivesPaused atomic.Bool // tests: the worker side stops renewing builds

	mu       sync.Mutex
	launcher *launcher   // started at the first build, let go when idle (launch.go)
	busy     int         // builds on launcher
	idle     *time.Timer // lets an idle launcher go
}

// New prepares the namespace runner for cfg and proves it works by running
// the whole set-up once (without a command). It fails, wrapping
// ErrUnavailable or ErrNamespaceLimit, when builds could not be sandboxed.
func New(cfg Config) (*Namespaces, error) {
	if !initCalled.Load() {
		return nil, fmt.Errorf("%w: sandbox.Init was not called at the start of main (or TestMain)", ErrUnavailable)
	}
	n := &Namespaces{cfg: cfg, selfPath: "/proc/self/exe", tier: cfg.Tier}
	if n.cfg.TempDir == "" {
		n.cfg.TempDir = os.TempDir()
	}
	// Canonical, symlink-free config paths: stage B refuses symlinks on
	// bind paths, and a mask must cover the directory a link points to.
	if p, err := filepath.EvalSymlinks(n.cfg.TempDir); err == nil {
		n.cfg.TempDir = p
	}
	n.masks = maskList(n.cfg)
	// What is not the kernel's first (reach.go): its refusals name a
	// setting or a directory, not user namespaces.
	u, err := resolveBuildUser(cfg.RunAsUser)
	if err != nil {
		return nil, err
	}
	n.asRoot, n.runUID, n.runGID = u.dropped, u.uid, u.gid
	if err := checkPreconditions(n.cfg, u); err != nil {
		return nil, err
	}
	if max, err := MaxUserNamespaces(); err == nil && max == 0 {
		return nil, fmt.Errorf("%w: /proc/sys/user/max_user_namespaces is 0", ErrUnavailable)
	}
	// The probe settles the tier: every build after it is set up the same way.
	res, err := n.run(context.Background(), Spec{}, true)
	if err != nil {
		if errors.Is(err, ErrNamespaceLimit) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	n.tier = res.Tier
	return n, nil
}

// Mode implements Runner.
func (n *Namespaces) Mode() string { return "user-namespace" }

// Tier reports the sandbox tier New found working on this host.
func (n *Namespaces) Tier() Tier { return n.tier }

// InUse reports how many user namespaces this runner's sandboxes hold now.
func (n *Namespaces) InUse() int { return int(n.inUse.Load()) }

// RunAs reports the host uid and gid sandbox processes run as.
func (n *Namespaces) RunAs() (uid, gid int) { return n.runUID, n.runGID }

// MaxUserNamespaces reads /proc/sys/user/max_user_namespaces, the per-user
// limit the kernel applies to every build's two namespaces.
func MaxUserNamespaces() (int, error) {
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	if err != nil {
		return 0, fmt.Errorf("read max_user_namespaces: %w", err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("parse max_user_namespaces: %w", err)
	}
	return v, nil
}

// Run implements Runner: it runs spec inside a fresh sandbox and waits.
func (n *Namespaces) Run(ctx context.Context, spec Spec) (Result, error) {
	if len(spec.Args) == 0 {
		return Result{}, errors.New("sandbox: empty command")
	}
	return n.run(ctx, spec, false)
}

// run is stage A, the worker's side of a build, as one sequence: prepare
// the host side, hand the build to the launcher, which clones it into its
// new namespaces, hand over the settings, and wait for the report. The
// launcher (launcher.go) does the rest, planSandbox in plan.go is the
// set-up, and the launcher reports how the build ended.
func (n *Namespaces) run(ctx context.Context, spec Spec, probe bool) (Result, error) {
	lim := withDefaults(spec.Limits, n.cfg.Defaults)
	// The sandbox opens Source, Dest and Dir as given: only absolute clean
	// paths, and a Dir below one of the two, can name what the caller meant.
	dir, err := buildDir(spec, probe)
	if err != nil {
		return Result{}, err
	}
	// A private TMPDIR per build, removed with whatever the build left in it.
	ws, err := newWorkspace(n.cfg.TempDir)
	if err != nil {
		return Result{}, err
	}
	defer removeWorkspace(ws)
	// As root, the sandbox runs as runUID on the host: hand it the
	// directories it must write, never following a link a previous build planted.
	if n.asRoot {
		if err := n.handOver(ws, spec.Source, spec.Dest); err != nil {
			return Result{}, err
		}
	}
	// Settings go in and the report comes out through a socket, never argv
	// or the environment, which builds can read in /proc/1.
	ctl, err := newControl()
	if err != nil {
		return Result{}, fmt.Errorf("sandbox: control socket: %w", err)
	}
	defer ctl.close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return Result{}, fmt.Errorf("sandbox: pipes: %w", err)
	}
	defer outR.Close()
	defer outW.Close()
	hc := launchSettings{
		Args: spec.Args, Env: envWithTMPDIR(spec.Env, ws), Dir: dir,
		Source: spec.Source, Dest: spec.Dest, TmpDir: ws, Network: spec.Network, Masks: n.masks, Limits: lim,
		UID: n.runUID, GID: n.runGID, Tier: n.tier, Probe: probe, MaxLandlockABI: n.cfg.MaxLandlockABI,
		DeadMan: spec.DeadMan,
	}
	// With a door, the launcher's end of its socket pair goes along (door.go).
	door, err := openDoorway(spec)
	if err != nil {
		return Result{}, err
	}
	defer door.close()
	handed := []*os.File{ctl.theirs, outW}
	if door != nil {
		handed = append(handed, door.theirs)
	}
	// The wall clock covers the whole build, set-up included.
	if lim.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lim.Timeout)
		defer cancel()
	}

	// Hand the build to the launcher; it clones the sandbox at once.
	start := time.Now()
	n.inUse.Add(NamespacesPerBuild)
	defer n.inUse.Add(-NamespacesPerBuild)
	l, err := n.launch(handed)
	if err != nil {
		return Result{}, err
	}
	defer n.releaseLauncher(l)
	ctl.theirs.Close()
	outW.Close()
	door.serve()
	// Hand over the settings; the launcher does nothing before it has them.
	// With a dead man's switch, the same goroutine then renews the build
	// until Run returns.
	done := make(chan struct{})
	defer close(done)
	go ctl.send(&hc, done, &n.keepalivesPaused)
	// Collect the output, capped so a build printing without end cannot
	// fill memory or the log store, and the report.
	out := newCappedWriter(spec.Output, lim.Output)
	copied := copyOutput(outR, out)
	reported := ctl.collect()

	// Wait for the report and for every writer of the output to be gone;
	// the launcher kills the build's namespace before it reports. On cancel
	// or timeout, killing PID 1 of the namespace makes the kernel kill every
	// process in it, however deep or detached.
	var body []byte
	select {
	case body = <-reported:
	case <-ctx.Done():
		ctl.kill()
		body = <-reported
	}
	select {
	case <-copied:
	case <-ctx.Done():
		ctl.kill()
		<-copied
	}
	res := Result{Enforcement: "rlimits", OutputTruncated: out.truncated(), Duration: time.Since(start)}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && lim.Timeout > 0:
		res.ExitCode, res.Killed = -1, "timeout "+lim.Timeout.String()
		return res, nil
	case ctx.Err() != nil:
		res.ExitCode, res.Killed = -1, "canceled"
		return res, nil
	}
	return res, readReport(body, &res)
}

// launch hands the build's files to the runner's launcher, starting a
// new launcher once if the last one is gone. The caller releases the
// launcher once the build is over.
func (n *Namespaces) launch(files []*os.File) (*launcher, error) {
	for attempt := 0; ; attempt++ {
		l, err := n.acquireLauncher()
		if err != nil {
			return nil, err
		}
		err = l.launch(files...)
		if err == nil {
			return l, nil
		}
		n.releaseLauncher(l)
		if attempt > 0 || !l.gone() {
			return nil, fmt.Errorf("sandbox: hand the build to the launcher: %w", err)
		}
	}
}

// buildDir checks the paths of spec and returns the build's working
// directory: Dir, or the first of Dest, Source and /.
func buildDir(spec Spec, probe bool) (string, error) {
	for _, p := range []string{spec.Source, spec.Dest} {
		if p != "" && (!filepath.IsAbs(p) || filepath.Clean(p) != p) {
			return "", fmt.Errorf("sandbox: %q must be an absolute clean path", p)
		}
	}
	if spec.Dir == "" {
		return firstNonEmpty(spec.Dest, spec.Source, "/"), nil
	}
	dir := filepath.Clean(spec.Dir)
	if !probe && !within(dir, spec.Source) && !within(dir, spec.Dest) {
		return "", fmt.Errorf("sandbox: Dir %q is not below Source or Dest", dir)
	}
	return dir, nil
}

// readReport decodes the launcher's report into res. A set-up failure is an
// error, named with the step that failed and, where one is known, the remedy.
func readReport(body []byte, res *Result) error {
	var hr launchReport
	if err := json.Unmarshal(body, &hr); err != nil {
		return fmt.Errorf("sandbox: the launcher ended without a report: %q", body)
	}
	if hr.CloneErrno != 0 {
		err := syscall.Errno(hr.CloneErrno)
		if err == syscall.ENOSPC {
			return fmt.Errorf("sandbox: clone: %w (%v)", ErrNamespaceLimit, err)
		}
		if remedy := startRemedy(err); remedy != "" {
			return fmt.Errorf("sandbox: new user namespaces are refused (%w). %s", err, remedy)
		}
		return fmt.Errorf("sandbox: clone: %w", err)
	}
	if hr.Error != "" {
		if hr.NamespaceLimit {
			return fmt.Errorf("sandbox: %w: %s", ErrNamespaceLimit, hr.Error)
		}
		return fmt.Errorf("sandbox: %s%s", hr.Error, setupRemedy(hr.Error))
	}
	res.ExitCode, res.Signal, res.Killed, res.Detail, res.Tier = hr.ExitCode, hr.Signal, hr.Killed, hr.Detail, hr.Tier
	return nil
}

// handOver gives runUID the directories a root worker's build must
// write: the fresh workspace (empty, so only itself), and Source and Dest
// with everything in them.
func (n *Namespaces) handOver(ws, source, dest string) error {
	if err := unix.Lchown(ws, n.runUID, n.runGID); err != nil {
		return fmt.Errorf("sandbox: chown %s: %w", ws, err)
	}
	for _, p := range []string{source, dest} {
		if err := chownTree(p, n.runUID, n.runGID); err != nil {
			return err
		}
	}
	return nil
}

// chownTree gives uid:gid ownership of root and everything below it. It
// walks by directory fd, opening each directory with O_NOFOLLOW and
// changing each entry with AT_SYMLINK_NOFOLLOW, so a planted symlink
// changes only itself, and no path is resolved twice.
func chownTree(root string, uid, gid int) error {
	if root == "" {
		return nil
	}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		err = unix.Lchown(root, uid, gid) // a file, or a link: only itself
		if err == nil {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("sandbox: chown %s: %w", root, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("sandbox: chown %s: %w", root, err)
	}
	if int(st.Uid) != uid || int(st.Gid) != gid {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			unix.Close(fd)
			return fmt.Errorf("sandbox: chown %s: %w", root, err)
		}
	}
	return chownBelow(fd, root, uid, gid)
}

// chownBelow changes every entry below the directory dir (path, for
// errors) and closes dir.
func chownBelow(dir int, path string, uid, gid int) error {
	f := os.NewFile(uintptr(dir), path)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("sandbox: chown %s: %w", path, err)
	}
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("sandbox: chown %s/%s: %w", path, name, err)
		}
		if int(st.Uid) != uid || int(st.Gid) != gid {
			if err := unix.Fchownat(dir, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("sandbox: chown %s/%s: %w", path, name, err)
			}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		sub, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("sandbox: chown %s/%s: %w", path, name, err)
		}
		if err := chownBelow(sub, path+"/"+name, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// maskList is every host directory a build must not see, as configured
// and with symlinks resolved, longest last so outer masks go first.
func maskList(c Config) []string {
	raw := append([]string{c.DataDir, c.BuilderDir, c.ConfigDir, c.SockFileDir,
		filepath.Join(c.TempDir, WorkspacesDir)}, c.StorageLocations...)
	seen := map[string]bool{}
	var out []string
	for _, p := range raw {
		if p == "" || !filepath.IsAbs(p) {
			continue
		}
		for _, q := range []string{filepath.Clean(p), resolved(p)} {
			if q != "" && q != "/" && !seen[q] {
				seen[q] = true
				out = append(out, q)
			}
		}
	}
	sortByDepth(out)
	return out
}

func resolved(p string) string {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return ""
	}
	return r
}

func within(p, dir string) bool {
	return dir != "" && (p == dir || strings.HasPrefix(p, dir+"/"))
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
