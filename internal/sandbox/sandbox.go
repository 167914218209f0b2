// Package sandbox runs one build command the way pkgfleet runs every build:
// inside two nested unprivileged user namespaces with a fresh root, the
// service's private directories masked, and limits on time, memory,
// processes, disk and output.
//
// It owns process isolation and nothing else: it does not know what R or
// Python are (internal/detect and internal/recipe do), and it does not
// decide whether unsandboxed builds are allowed (the worker does, from
// Git.AllowUnsandboxedGitBuilds, and then uses Direct).
//
// Use: call Init first thing in main (and in TestMain of packages whose
// tests run sandboxes), because each runner re-executes the running binary
// once as its launcher, which clones every build's sandbox; call CleanStale
// once at start; then New, and Run per command. The set-up sequence, with
// what each step protects against, is planSandbox in plan.go; the threat
// model and operator guide are in docs/sandbox.md.
package sandbox

import (
	"context"
	"io"
	"net"
	"time"
)

// Runner runs one command as a build would run it. Both the namespace
// sandbox and the unsandboxed Direct runner implement it, so the build
// recipes and the worker never know which one they were given.
type Runner interface {
	// Run starts spec and waits for it. A non-zero exit or a limit is not
	// an error: it is reported in Result. An error means the command could
	// not be started or supervised at all.
	Run(ctx context.Context, spec Spec) (Result, error)
	// Mode names the isolation for logs and build records:
	// "user-namespace" or "unsandboxed".
	Mode() string
}

// Tier names how much of the isolation the sandbox could set up where the
// worker runs. Both working tiers keep the user, mount, PID, IPC, UTS and
// network namespaces, the masks, seccomp, no_new_privs and the limits;
// they differ only in the /proc a build sees (docs/sandbox.md).
type Tier string

const (
	// TierFull gives the build a fresh procfs of its own PID namespace:
	// bare hosts, Docker with systempaths=unconfined, Kubernetes pods with
	// hostUsers: false and procMount: Unmasked.
	TierFull Tier = "full"
	// TierMaskedProc binds the container's /proc, masks and all, read-only:
	// a container runtime masks /proc (Docker's and Kubernetes' defaults)
	// and the kernel refuses a fresh one. The build sees the container's
	// process table; its own Landlock domain, non-dumpable supervisors and
	// the PID namespace keep it from reading or signalling those processes.
	TierMaskedProc Tier = "masked-proc"
	// TierNone means no build can be sandboxed here.
	TierNone Tier = "none"
)

// GivesUp says in words what builds give up in tier t, for the worker's
// startup line and `sandbox check`.
func (t Tier) GivesUp() string {
	switch t {
	case TierFull:
		return "nothing: each build gets a fresh /proc of its own PID namespace"
	case TierMaskedProc:
		return "a fresh /proc: builds see the container's process table (a read-only bind of its masked /proc), " +
			"but none of those processes' memory, environment, fds, root or cwd (a Landlock domain per build), " +
			"and can signal or trace none of them (PID namespace, seccomp)"
	case TierNone:
		return "everything: no build can be sandboxed here (the refusal names the settings that fix it; docs/sandbox.md)"
	}
	return "unknown tier " + string(t)
}

// Spec is one command to run.
type Spec struct {
	// Args[0] is the program: an absolute path, or a name looked up in PATH.
	Args []string
	// Env is the complete environment; the runner adds TMPDIR (a fresh
	// private directory) and overrides nothing else.
	Env []string
	// Dir is the working directory. It must be Source, Dest, or below one.
	Dir string
	// Source is the checkout, exposed read-write.
	Source string
	// Dest is the build destination, exposed read-write.
	Dest string
	// Network gives the command the host network (Git.BuildNetwork).
	// Without it the command sees only a loopback interface of its own.
	Network bool
	// Door, when set and Network is not, is the build's one way out: it
	// serves what the build sends to DoorAddr (door.go).
	Door Door
	// Output receives stdout and stderr, interleaved, up to Limits.Output
	// bytes; the rest is dropped and Result.OutputTruncated is set.
	Output io.Writer
	// Limits for this command; zero fields take the runner's defaults.
	Limits Limits
	// DeadMan, when set, is the dead man's switch: the worker renews the
	// build at least every DeadMan/4 from a goroutine of its own, and the
	// sandbox's launcher, a separate process, kills the whole build once it
	// has seen no renewal for DeadMan on its own monotonic clock. So a
	// worker that stalls (SIGSTOP, a frozen VM, a hung runtime) cannot
	// leave its build running. Zero turns it off. Direct ignores it.
	DeadMan time.Duration
}

// Limits bound one command. A zero field means "the runner's default".
type Limits struct {
	Timeout   time.Duration // wall clock; the whole process tree is killed
	Memory    int64         // bytes
	Processes int           // live processes (and threads) at once
	Disk      int64         // bytes written to TMPDIR and Dest together
	Output    int64         // bytes of combined output kept
}

// Result says how a command ended.
type Result struct {
	// ExitCode is the command's exit status, or -1 when it was killed by a
	// signal (see Signal) or by a limit (see Killed).
	ExitCode int
	// Signal is the name of the signal that ended the command, if any.
	Signal string
	// Killed names the limit that ended the command, in the form the build
	// record shows: "timeout 1h0m0s", "memory limit 2GiB",
	// "process limit 512", "disk limit 4GiB", or "deadman" (the dead
	// man's switch, Spec.DeadMan). Empty when no limit was hit.
	Killed string
	// Detail says in words why the build was killed, where Killed alone
	// does not: "the worker stopped renewing this build for 20s".
	Detail string
	// Enforcement says how the limits were applied: "cgroup v2" or
	// "rlimits" (and, for Direct, "unsandboxed").
	Enforcement string
	// OutputTruncated is set when Output hit Limits.Output.
	OutputTruncated bool
	// Duration is the wall-clock time the command ran.
	Duration time.Duration
	// Tier is the sandbox tier the command ran in ("" for Direct).
	Tier Tier
}

// Success reports whether the command exited 0 without hitting a limit.
func (r Result) Success() bool { return r.ExitCode == 0 && r.Killed == "" && r.Signal == "" }

// DoorAddr is the address of the door inside a build's network namespace.
// Each build has its own namespace, so every build's door has this address.
const DoorAddr = "127.0.0.1:3128"

// Door serves a build's connections to DoorAddr. Serve must return once l
// is closed, which the runner does when the build is over.
type Door interface {
	Serve(l net.Listener) error
}
