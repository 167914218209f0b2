// Command pkgfleet-worker takes build jobs from Redis and builds them in
// the sandbox.
//
//	pkgfleet-worker [-config FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/worker"
)

func main() {
	// The sandbox re-executes this binary to set up each build; in that
	// case Init runs the sandbox stage and never returns.
	sandbox.Init()
	// git runs this binary again as the connector of its ssh and git://
	// transports; then Init runs it and never returns.
	git.Init()

	cfg, rest, err := config.FromArgs("pkgfleet-worker", "pkgfleet-worker [-config FILE]\n"+
		"       pkgfleet-worker [-config FILE] sandbox check\n"+
		"       pkgfleet-worker [-config FILE] sandbox exec [--source DIR] [--dest DIR] [--network] -- CMD ARGS…", os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkgfleet-worker:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(rest) > 0 && rest[0] == "sandbox" {
		code := worker.SandboxCommand(ctx, cfg, rest[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if len(rest) > 0 {
		fmt.Fprintf(os.Stderr, "pkgfleet-worker: unknown command %q (try -help)\n", rest[0])
		os.Exit(2)
	}
	log := config.Logger(os.Stderr)
	w, err := worker.New(ctx, cfg, log, worker.Options{})
	if err != nil {
		log.Error("pkgfleet-worker cannot start", "error", err)
		os.Exit(1)
	}
	if err := w.Run(ctx); err != nil {
		log.Error("pkgfleet-worker stopped", "error", err)
		os.Exit(1)
	}
}
