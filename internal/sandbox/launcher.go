//go:build linux

package sandbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The launcher is the sandbox's long-lived launcher process: /proc/self/exe
// re-executed once per runner (Namespaces) as the run-as user, dying with
// the worker. For each build the worker hands it a control socket, the
// output pipe and the door's socket pair over fd 3; the launcher clones
// stage B into the build's namespaces (no program start, a small process's
// page tables), then supervises the build from outside them: it samples
// the limits, keeps the dead man's switch, judges how the build ended,
// kills the namespace and reports on the control socket. A separate
// process, so a stopped or hung worker cannot hold the switch back.
//
// The control socket carries, from the worker, the settings (JSON) and
// then the dead man's keepalive bytes; from the launcher, one byte with a
// pidfd of stage B per clone (the worker kills through it on timeout or
// cancel), then the report (JSON), then EOF.

// launcherMain serves builds until the worker closes its end of fd 3.
func launcherMain() int {
	// Builds must not ptrace this process or read its /proc files.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox launcher: prctl dumpable: %v\n", err)
		return 1
	}
	host, err := readHostFacts()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox launcher: %v\n", err)
		return 1
	}
	_ = unix.SetNonblock(3, false)
	// Builds in flight when the worker lets go are finished first.
	var builds sync.WaitGroup
	defer builds.Wait()
	for {
		buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(3*4))
		n, oobn, _, _, err := unix.Recvmsg(3, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			return 0 // the worker let us go
		}
		fds := receivedFds(oob[:oobn])
		if len(fds) < 2 {
			closeFds(fds)
			continue
		}
		door := -1
		if len(fds) > 2 {
			door = fds[2]
		}
		builds.Add(1)
		go func() {
			defer builds.Done()
			serveBuild(host, fds[0], fds[1], door)
		}()
	}
}

func receivedFds(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if r, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

func closeFds(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// serveBuild runs one build: settings in, report out, on ctl.
func serveBuild(host hostFacts, ctl, out, door int) {
	f := os.NewFile(uintptr(ctl), "control")
	defer f.Close()
	var hc launchSettings
	dec := json.NewDecoder(f)
	var res launchReport
	if err := dec.Decode(&hc); err != nil {
		closeFds([]int{out, door})
		res.Error = fmt.Sprintf("read settings: %v", err)
	} else {
		// The worker's keepalives follow the settings on the same socket.
		hc.keepalives = io.MultiReader(dec.Buffered(), f)
		var s *sandbox
		res, s = supervise(&hc, host, ctl, out, door)
		if s != nil {
			// The kernel's teardown of the namespaces is not waited for
			// before the report: the output's end and the report are all
			// the worker needs.
			defer s.reap()
		}
	}
	_ = json.NewEncoder(f).Encode(&res)
	// EOF for the worker now: a dead man's reader may still hold the fd
	// until the worker closes its end.
	_ = unix.Shutdown(ctl, unix.SHUT_WR)
}

// supervise clones the build's sandbox, waits for it and judges it; the
// sandbox it returns, killed, is the caller's to reap. With no tier
// settled yet (the probe of New) it tries a fresh /proc first, then one
// with only processes (kernels that relax the check), then the masked-proc
// tier.
func supervise(hc *launchSettings, host hostFacts, ctl, out, door int) (launchReport, *sandbox) {
	defer func() { closeFds([]int{out, door}) }() // out and door change below
	type try struct {
		tier Tier
		opts string
	}
	var tries []try
	switch hc.Tier {
	case TierMaskedProc:
		tries = []try{{TierMaskedProc, ""}}
	case TierFull:
		tries = []try{{TierFull, ""}, {TierFull, "subset=pid"}}
	default:
		tries = []try{{TierFull, ""}, {TierFull, "subset=pid"}, {TierMaskedProc, ""}}
	}
	for i, t := range tries {
		// In the masked-proc tier Landlock is what keeps the build out of other
		// processes' /proc entries: no domain, no build.
		if t.tier == TierMaskedProc && planLandlock(host.landlockABI, hc.MaxLandlockABI).abi == 0 {
			return fail("landlock", landlockMissing()), nil
		}
		s, res := startSandbox(hc, host, ctl, out, door, t.tier, t.opts)
		if s == nil {
			if res.procRefused && i+1 < len(tries) {
				continue
			}
			return res.launchReport, nil
		}
		closeFds([]int{out, door})
		out, door = -1, -1
		r := s.wait(hc)
		r.Tier = t.tier
		return r, s
	}
	return launchReport{Error: "no tier to try"}, nil
}

// fail is how a set-up step fails: the report names the step, and says
// whether the kernel's namespace limit was the cause.
func fail(step string, err error) launchReport {
	return launchReport{Error: fmt.Sprintf("%s: %v", step, err), NamespaceLimit: errors.Is(err, unix.ENOSPC)}
}

// sandbox is one running build as the launcher sees it: stage B.
type sandbox struct {
	pid     int
	pidfd   int
	statusR int
	lifeW   int
}

type startResult struct {
	launchReport
	procRefused bool // the kernel refused a fresh /proc: try the next tier
}

// startSandbox clones stage B with its plan and waits until stage C has
// exec'd the build (or failed to). A nil sandbox comes with the failure.
func startSandbox(hc *launchSettings, host hostFacts, ctl, out, door int, tier Tier, procOpts string) (*sandbox, startResult) {
	var ps []int // every pipe end; closed on return unless kept
	defer func() { closeFds(ps) }()
	pipe := func(flags int) (r, w int) {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|flags); err != nil {
			return -1, -1
		}
		ps = append(ps, p[0], p[1])
		return p[0], p[1]
	}
	errR, errW := pipe(0)
	statusR, statusW := pipe(0)
	lifeR, lifeW := pipe(unix.O_NONBLOCK)
	for _, fd := range ps {
		if fd < 0 {
			return nil, startResult{launchReport: launchReport{Error: "sandbox: pipes: too many open files"}}
		}
	}
	f := inherited{out: out, errW: errW, statusW: statusW, lifeR: lifeR, door: door}
	c, err := newStageC(hc, errW, host)
	if err != nil {
		return nil, startResult{launchReport: fail("prepare the build", err)}
	}
	b, err := planSandbox(hc, c, f, tier, procOpts)
	if err != nil {
		return nil, startResult{launchReport: fail("plan the sandbox", err)}
	}
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS)
	if !hc.Network {
		flags |= unix.CLONE_NEWNET
	}
	pid, pidfd, errno := rawCloneB(b, flags)
	if errno != 0 {
		return nil, startResult{launchReport: launchReport{Error: "clone: " + errno.Error(),
			NamespaceLimit: errno == unix.ENOSPC, CloneErrno: int(errno)}}
	}
	// The worker kills through this on timeout or cancel.
	_ = unix.Sendmsg(ctl, []byte{'P'}, unix.UnixRights(pidfd), nil, unix.MSG_NOSIGNAL)
	// Only the launcher's ends stay open here: stage B's EOF on lifeR must
	// mean the launcher is gone, and the failure pipe's EOF that stages B
	// and C closed it (C by execve).
	for _, fd := range ps {
		if fd != errR && fd != statusR && fd != lifeW {
			unix.Close(fd)
		}
	}
	ps = nil
	s := &sandbox{pid: pid, pidfd: pidfd, lifeW: lifeW, statusR: statusR}
	var report [12]byte
	n := readFull(errR, report[:])
	unix.Close(errR)
	if n == len(report) {
		s.kill()
		s.reap()
		return nil, setupFailure(report, hc, b)
	}
	return s, startResult{}
}

// readFull reads into buf until it is full or the pipe is at EOF (or
// fails), and returns how much it read.
func readFull(fd int, buf []byte) int {
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || m <= 0 {
			break
		}
		n += m
	}
	return n
}

// setupFailure names the step of stage B or C a failure report is about.
func setupFailure(report [12]byte, hc *launchSettings, b *stageB) startResult {
	stage, step := binary.NativeEndian.Uint32(report[0:]), binary.NativeEndian.Uint32(report[4:])
	errno := syscall.Errno(binary.NativeEndian.Uint32(report[8:]))
	if stage == 1 && int(step) < len(b.names) {
		name := b.names[step]
		return startResult{launchReport: fail(name, errno), procRefused: name == stepMountProc && errno == unix.EPERM}
	}
	name := stepNames[step]
	switch step {
	case stepExec:
		name += " " + hc.Args[0]
	case stepChdir:
		name += " " + hc.Dir
	case stepRootCheck:
		return startResult{launchReport: launchReport{Error: "root check: / is not the sandbox root"}}
	}
	return startResult{launchReport: fail(name, errno)}
}

// kill ends the sandbox: SIGKILL to its PID 1 makes the kernel kill every
// process in the namespace, however deep or detached.
func (s *sandbox) kill() { _ = unix.PidfdSendSignal(s.pidfd, unix.SIGKILL, nil, 0) }

// reap waits for stage B's end, the namespaces' teardown included, and
// closes the launcher's ends.
func (s *sandbox) reap() {
	var info unix.Siginfo
	for {
		if err := unix.Waitid(unix.P_PIDFD, s.pidfd, &info, unix.WEXITED, nil); !errors.Is(err, unix.EINTR) {
			break
		}
	}
	unix.Close(s.pidfd)
	unix.Close(s.lifeW)
	unix.Close(s.statusR)
}

// wait supervises the running build: it enforces the limits it can
// watch and the dead man's switch, and reports how the build's main
// process ended. Nothing outlives it: the namespace is killed before the
// report goes out, so the output pipe is closed when the worker reads it.
func (s *sandbox) wait(hc *launchSettings) launchReport {
	w := newWatcher(hc, s)
	// Both watchers are gone before the pidfd is closed: a kill must never
	// reach a number reused by another build.
	stop := make(chan struct{})
	var watching sync.WaitGroup
	if w.limited() {
		watching.Go(func() { w.run(stop) })
	}
	if hc.DeadMan > 0 {
		watching.Go(func() { w.deadMan(hc.keepalives, hc.DeadMan, stop) })
	}
	var res launchReport
	var status [4]byte
	if readFull(s.statusR, status[:]) != len(status) {
		// Stage B died before stage C ended: killed from outside.
		res.ExitCode, res.Signal = -1, "SIGKILL"
	} else {
		ws := unix.WaitStatus(binary.NativeEndian.Uint32(status[:]))
		switch {
		case ws.Signaled():
			res.ExitCode, res.Signal = -1, unixSignalName(ws.Signal())
		default:
			res.ExitCode = ws.ExitStatus()
		}
	}
	close(stop)
	watching.Wait()
	res.Killed, res.Detail = w.verdict(res)
	if res.Killed != "" {
		res.ExitCode, res.Signal = -1, ""
	}
	s.kill()
	return res
}
