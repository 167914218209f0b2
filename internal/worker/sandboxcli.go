package worker

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/detect"
	"github.com/pkgfleet/pkgfleet/internal/recipe"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// SandboxCommand runs the worker's ops entry points:
//
//	pkgfleet-worker [-config FILE] sandbox check
//	pkgfleet-worker [-config FILE] sandbox exec [--source DIR] [--dest DIR] [--network] -- CMD ARGS…
//
// It returns the process exit status.
func SandboxCommand(ctx context.Context, cfg *config.Config, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: pkgfleet-worker sandbox check | sandbox exec [--source DIR] [--dest DIR] [--network] -- CMD ARGS…")
		return 2
	}
	switch args[0] {
	case "check":
		return sandboxCheck(ctx, cfg, stdout)
	case "exec":
		return sandboxExec(ctx, cfg, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "pkgfleet-worker sandbox: unknown command %q (check, exec)\n", args[0])
	return 2
}

// CheckPrecondition is the exit status of sandbox check when the sandbox
// is refused for something that is not a kernel feature (a directory the
// build user cannot reach, the build user itself): scripts then point at
// the line it printed, not at user namespaces.
const CheckPrecondition = 3

// sandboxCheck prints what a worker would find at startup and whether its
// slots fit the user-namespace limit; non-zero when the sandbox is unusable
// (CheckPrecondition when for a precondition, else 1).
func sandboxCheck(ctx context.Context, cfg *config.Config, out io.Writer) int {
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	status := 0
	scfg := SandboxConfig(cfg)
	ns, err := sandbox.New(scfg)
	if err != nil {
		fmt.Fprintf(out, "sandbox tier: %s (refused: %v)\n", sandbox.TierNone, err)
		fmt.Fprintf(out, "sandbox: UNUSABLE: %v\n", err)
		status = 1
		if errors.As(err, new(*sandbox.PreconditionError)) {
			status = CheckPrecondition
		}
	} else {
		fmt.Fprintf(out, "sandbox tier: %s (gives up %s)\n", ns.Tier(), givesUp(ns))
		uid, gid := ns.RunAs()
		fmt.Fprintf(out, "sandbox: user namespaces usable; builds run as uid %d gid %d\n", uid, gid)
		usable := 0
		for _, lang := range []string{"r", "python"} {
			d := &detect.Detector{Runner: ns, Log: log, TempDir: cfg.Server.TempDir}
			var derr error
			if lang == "r" {
				_, derr = d.R(ctx, cfg.Server.RVersion)
			} else {
				_, derr = d.Python(ctx, cfg.Server.PythonVersion)
			}
			if derr == nil {
				usable++
			}
		}
		if usable == 0 {
			status = 1
		}
	}
	needed := sandbox.NamespacesPerBuild * cfg.Worker.Concurrency
	max, err := sandbox.MaxUserNamespaces()
	switch {
	case err != nil:
		fmt.Fprintf(out, "max_user_namespaces: unknown (%v)\n", err)
	case max < needed:
		fmt.Fprintf(out, "max_user_namespaces: %d; this worker's %d slots need %d: TOO FEW (raise user.max_user_namespaces or lower Worker.Concurrency)\n", max, cfg.Worker.Concurrency, needed)
		status = cmp.Or(status, 1)
	default:
		fmt.Fprintf(out, "max_user_namespaces: %d; this worker's %d slots need %d (2 per build): fits\n", max, cfg.Worker.Concurrency, needed)
	}
	return status
}

// sandboxExec runs one command exactly as a build runs, and passes its
// exit status through.
func sandboxExec(ctx context.Context, cfg *config.Config, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pkgfleet-worker sandbox exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	source := fs.String("source", "", "directory exposed read-write as the build's source (default: an empty temp dir)")
	dest := fs.String("dest", "", "directory exposed read-write as the build's destination (default: an empty temp dir)")
	network := fs.Bool("network", cfg.Git.BuildNetwork, "give the command the host network (Git.BuildNetwork)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cmd := fs.Args()
	if len(cmd) == 0 {
		fmt.Fprintln(stderr, "pkgfleet-worker sandbox exec: no command given (… -- CMD ARGS)")
		return 2
	}
	scfg := SandboxConfig(cfg)
	var runner sandbox.Runner
	if ns, err := sandbox.New(scfg); err == nil {
		runner = ns
	} else if cfg.Git.AllowUnsandboxedGitBuilds {
		fmt.Fprintf(stderr, "pkgfleet-worker sandbox exec: WARNING: sandbox unusable (%v); running unsandboxed (Git.AllowUnsandboxedGitBuilds)\n", err)
		runner = sandbox.NewDirect(scfg)
	} else {
		fmt.Fprintf(stderr, "pkgfleet-worker sandbox exec: %v\n", err)
		return 1
	}
	for _, dir := range []*string{source, dest} {
		if *dir != "" {
			continue
		}
		tmp, err := os.MkdirTemp(cfg.Server.TempDir, "pkgfleet-exec-")
		if err != nil {
			fmt.Fprintln(stderr, "pkgfleet-worker sandbox exec:", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		_ = os.Chmod(tmp, 0o755)
		*dir = tmp
	}
	res, err := runner.Run(ctx, sandbox.Spec{
		Args: cmd, Env: recipe.Env(*dest), Source: *source, Dest: *dest, Dir: *dest,
		Network: *network, Output: stdout,
	})
	if err != nil {
		fmt.Fprintln(stderr, "pkgfleet-worker sandbox exec:", err)
		return 1
	}
	if res.Killed != "" {
		fmt.Fprintf(stderr, "pkgfleet-worker sandbox exec: killed: %s (limits enforced by %s)\n", res.Killed, res.Enforcement)
	}
	return res.ExitStatus()
}
