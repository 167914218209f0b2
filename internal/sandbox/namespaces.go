package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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
}

// New prepares the namespace runner for cfg and proves it works by running
// the whole set-up once (without a command). It fails, wrapping
// ErrUnavailable or ErrNamespaceLimit, when builds could not be sandboxed.
func New(cfg Config) (*Namespaces, error) {
	if !initCalled.Load() {
		return nil, fmt.Errorf("%w: sandbox.Init was not called at the start of main (or TestMain)", ErrUnavailable)
	}
	if max, err := MaxUserNamespaces(); err == nil && max == 0 {
		return nil, fmt.Errorf("%w: /proc/sys/user/max_user_namespaces is 0", ErrUnavailable)
	}
	n := &Namespaces{cfg: cfg, runUID: os.Getuid(), runGID: os.Getgid(), selfPath: "/proc/self/exe", tier: cfg.Tier}
	if n.cfg.TempDir == "" {
		n.cfg.TempDir = os.TempDir()
	}
	// Canonical, symlink-free config paths: the helper refuses symlinks on
	// bind paths, and a mask must cover the directory a link points to.
	if p, err := filepath.EvalSymlinks(n.cfg.TempDir); err == nil {
		n.cfg.TempDir = p
	}
	n.masks = maskList(n.cfg)
	if os.Geteuid() == 0 {
		uid, gid, err := lookupRunAs(cfg.RunAsUser)
		if err != nil {
			return nil, err
		}
		n.asRoot, n.runUID, n.runGID = true, uid, gid
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
// the host side, start the helper in its new namespaces, hand it its
// settings, and wait for its report. The helper (runHelper in helper.go)
// does the rest and reports how the build ended.
func (n *Namespaces) run(ctx context.Context, spec Spec, probe bool) (Result, error) {
	lim := withDefaults(spec.Limits, n.cfg.Defaults)
	// The helper opens Source, Dest and Dir as given: only absolute clean
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
		for _, p := range []string{ws, spec.Source, spec.Dest} {
			if err := chownTree(p, n.runUID, n.runGID); err != nil {
				return Result{}, err
			}
		}
	}
	// Settings go in and the report comes out through pipes, never argv or
	// the environment, which builds can read in /proc/1.
	p, err := newHelperPipes()
	if err != nil {
		return Result{}, fmt.Errorf("sandbox: pipes: %w", err)
	}
	defer p.close()
	hc := helperConfig{
		Args: spec.Args, Env: envWithTMPDIR(spec.Env, ws), Dir: dir,
		Source: spec.Source, Dest: spec.Dest, TmpDir: ws, Network: spec.Network, Masks: n.masks,
		Memory: lim.Memory, Processes: lim.Processes, Disk: lim.Disk,
		UID: n.runUID, GID: n.runGID, Tier: n.tier, Probe: probe, MaxLandlockABI: n.cfg.MaxLandlockABI,
		DeadMan: spec.DeadMan,
	}
	// With a door, the helper's end of its socket pair goes out as an extra fd (door.go).
	door, err := openDoorway(spec)
	if err != nil {
		return Result{}, err
	}
	defer door.close()
	if door != nil {
		hc.DoorFd = 5 + len(p.extra)
		p.extra = append(p.extra, door.theirs)
	}
	// The wall clock covers the whole build, set-up included.
	if lim.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lim.Timeout)
		defer cancel()
	}

	// Start the helper in new namespaces, as runUID from its first instruction.
	start := time.Now()
	n.inUse.Add(NamespacesPerBuild)
	defer n.inUse.Add(-NamespacesPerBuild)
	helper, err := n.startHelper(p, spec.Network)
	if err != nil {
		return Result{}, err
	}
	door.serve()
	// Hand over the settings; the helper does nothing before it has them.
	// With a dead man's switch, the same goroutine then renews the build
	// until Run returns.
	done := make(chan struct{})
	defer close(done)
	go p.send(&hc, done, &n.keepalivesPaused)
	// Collect the output, capped so a build printing without end cannot
	// fill memory or the log store, and the report.
	out := newCappedWriter(spec.Output, lim.Output)
	reported, copied := p.collect(out)

	// Wait for the report and for every writer of the output to be gone;
	// the helper kills and reaps the build's processes before it reports.
	// Its own exit, and the kernel's teardown of the namespaces, are not
	// waited for. On cancel or timeout, killing PID 1 of the namespace makes
	// the kernel kill every process in it, however deep or detached.
	var body []byte
	select {
	case body = <-reported:
	case <-ctx.Done():
		_ = helper.Kill()
		body = <-reported
	}
	select {
	case <-copied:
	case <-ctx.Done():
		_ = helper.Kill()
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

// helperPipes are stage A's ends of the helper's fds 3 (settings in),
// 4 (report out), 1 and 2 (output), and the helper's ends until it has them.
type helperPipes struct {
	cfgR, cfgW *os.File
	resR, resW *os.File
	outR, outW *os.File
	// extra are more files for the helper, its fds 5 and up, in order;
	// their numbers travel in the settings.
	extra []*os.File
}

func newHelperPipes() (*helperPipes, error) {
	var p helperPipes
	for _, pair := range []struct{ r, w **os.File }{{&p.cfgR, &p.cfgW}, {&p.resR, &p.resW}, {&p.outR, &p.outW}} {
		r, w, err := os.Pipe()
		if err != nil {
			p.close()
			return nil, err
		}
		*pair.r, *pair.w = r, w
	}
	return &p, nil
}

// close closes every end still open; closing twice is harmless.
func (p *helperPipes) close() {
	for _, f := range []*os.File{p.cfgR, p.cfgW, p.resR, p.resW, p.outR, p.outW} {
		if f != nil {
			f.Close()
		}
	}
}

// handedOver closes the helper's ends once it holds them, so that its
// exit is seen as EOF.
func (p *helperPipes) handedOver() {
	p.cfgR.Close()
	p.resW.Close()
	p.outW.Close()
}

// send writes the settings. With a dead man's switch (hc.DeadMan) it then
// writes a keepalive byte every DeadMan/4 until done, skipping those while
// paused. It closes the pipe last.
func (p *helperPipes) send(hc *helperConfig, done <-chan struct{}, paused *atomic.Bool) {
	defer p.cfgW.Close()
	if err := json.NewEncoder(p.cfgW).Encode(hc); err != nil || hc.DeadMan <= 0 {
		return
	}
	t := time.NewTicker(hc.DeadMan / 4)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if paused.Load() {
			continue
		}
		if _, err := p.cfgW.Write([]byte{'.'}); err != nil {
			return
		}
	}
}

// collect copies the output to out and reads the report, each in the
// background: the report arrives on reported, and copied closes at the
// output's end.
func (p *helperPipes) collect(out io.Writer) (reported <-chan []byte, copied <-chan struct{}) {
	rep, done := make(chan []byte, 1), make(chan struct{})
	go func() {
		b, _ := io.ReadAll(p.resR)
		rep <- b
	}()
	go func() {
		_, _ = io.Copy(out, p.outR)
		close(done)
	}()
	return rep, done
}

// startHelper starts stage B: /proc/self/exe as the helper, PID 1 of new
// user, mount, PID, IPC, UTS (and network) namespaces, in a session of its
// own, dying with the worker.
func (n *Namespaces) startHelper(p *helperPipes, network bool) (*os.Process, error) {
	cmd := &exec.Cmd{
		Path: n.selfPath,
		// argv[0] marks the helper; it carries nothing else, since builds
		// can read /proc/1/cmdline.
		Args: []string{helperArg0},
		// One P: the helper runs one sequence and then waits, and a second
		// P only makes the runtime start threads, which costs every build's
		// start-up. Nothing else: builds get their environment from the
		// settings.
		Env:        []string{"GOMAXPROCS=1"},
		Dir:        "/",
		Stdout:     p.outW, // stdout and stderr interleaved, as Spec.Output promises
		Stderr:     p.outW,
		ExtraFiles: append([]*os.File{p.cfgR, p.resW}, p.extra...), // fd 3: settings in, fd 4: report out
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
				syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: n.runUID, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: n.runGID, Size: 1}},
			Setsid:      true,
			// With the worker gone nothing may stay: the helper is PID 1 of
			// the build's PID namespace, so its death kills every build process.
			Pdeathsig: syscall.SIGKILL,
		},
	}
	if !network {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
	}
	if n.asRoot {
		// Root maps runUID to 0 in the namespace and switches to it there, so
		// the helper (and everything below it) is runUID on the host from its
		// first instruction, with root's supplementary groups dropped.
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}}
	}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the forking thread exits (golang/go#27505):
		// keep this goroutine on its thread until the helper is reaped,
		// which may be after Run has returned.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	err := <-started
	switch {
	case err == nil:
		p.handedOver()
		return cmd.Process, nil
	case errors.Is(err, syscall.ENOSPC):
		return nil, fmt.Errorf("sandbox: clone: %w (%v)", ErrNamespaceLimit, err)
	}
	if remedy := startRemedy(err); remedy != "" {
		return nil, fmt.Errorf("sandbox: new user namespaces are refused (%w). %s", err, remedy)
	}
	return nil, fmt.Errorf("sandbox: start helper: %w", err)
}

// readReport decodes the helper's report into res. A set-up failure is an
// error, named with the step that failed and, where one is known, the remedy.
func readReport(body []byte, res *Result) error {
	var hr helperResult
	if err := json.Unmarshal(body, &hr); err != nil {
		return fmt.Errorf("sandbox: helper ended without a report: %q", body)
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

// lookupRunAs resolves Server.RunAsUser for a root worker. Empty means a
// dedicated "pkgfleet" account, else "nobody". Root itself is refused:
// builds never run as host root.
func lookupRunAs(name string) (uid, gid int, err error) {
	var u *user.User
	switch {
	case name != "":
		if u, err = user.Lookup(name); err != nil {
			if _, nerr := strconv.Atoi(name); nerr != nil {
				return 0, 0, fmt.Errorf("sandbox: RunAsUser %q: %w", name, err)
			}
			if u, err = user.LookupId(name); err != nil {
				// A bare numeric id without a passwd entry is fine.
				id, _ := strconv.Atoi(name)
				u = &user.User{Uid: name, Gid: strconv.Itoa(id)}
			}
		}
	default:
		if u, err = user.Lookup("pkgfleet"); err != nil {
			if u, err = user.Lookup("nobody"); err != nil {
				u = &user.User{Uid: "65534", Gid: "65534"}
			}
		}
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	if uid == 0 || gid == 0 {
		return 0, 0, fmt.Errorf("sandbox: RunAsUser %q is root; builds must run unprivileged", name)
	}
	return uid, gid, nil
}

// chownTree gives uid:gid ownership of root and everything below it,
// using lchown so that a planted symlink changes only itself.
func chownTree(root string, uid, gid int) error {
	if root == "" {
		return nil
	}
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("sandbox: chown %s: %w", p, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("sandbox: chown %s: %w", p, err)
		}
		if int(st.Uid) == uid && int(st.Gid) == gid {
			return nil
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("sandbox: chown %s: %w", p, err)
		}
		return nil
	})
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
