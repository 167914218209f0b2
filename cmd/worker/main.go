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
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/worker"
)

func main() {
	// The sandbox re-executes this binary to set up each build; in that
	// case Init runs the sandbox stage and never returns.
	sandbox.Init()

	cfg, _, err := config.FromArgs("pkgfleet-worker", "pkgfleet-worker [-config FILE]", os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkgfleet-worker:", err)
		os.Exit(2)
	}
	log := config.Logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
