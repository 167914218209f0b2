// Command pkgfleet-api serves pkgfleet's REST API.
//
//	pkgfleet-api [-config FILE]
//	pkgfleet-api token create --name NAME --scope read|write|admin [--expires 2027-06-01]
//	pkgfleet-api [-config FILE] storage copy --to s3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/api"
	"github.com/pkgfleet/pkgfleet/internal/auth"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/git"
)

func main() {
	// git runs this binary again as the connector of its ssh and git://
	// transports; then Init runs it and never returns.
	git.Init()
	if len(os.Args) > 2 && os.Args[1] == "token" && os.Args[2] == "create" {
		os.Exit(tokenCreate(os.Args[3:]))
	}
	cfg, rest, err := config.FromArgs("pkgfleet-api", "pkgfleet-api [-config FILE]\n       pkgfleet-api token create --name NAME --scope read|write|admin [--expires DATE]\n       pkgfleet-api [-config FILE] storage copy --to s3", os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkgfleet-api:", err)
		os.Exit(2)
	}
	log := config.Logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(rest) > 0 && rest[0] == "storage" {
		os.Exit(api.StorageCommand(ctx, cfg, rest[1:], os.Stdout, os.Stderr))
	}
	if err := api.Run(ctx, cfg, log); err != nil {
		log.Error("pkgfleet-api stopped", "error", err)
		os.Exit(1)
	}
}

func tokenCreate(args []string) int {
	fs := flag.NewFlagSet("pkgfleet-api token create", flag.ContinueOnError)
	name := fs.String("name", "", "token `name`, shown in logs instead of the token (default: scope and date)")
	scope := fs.String("scope", "read", "read, write or admin")
	expires := fs.String("expires", "", "expiry `date` (2027-06-01) or RFC 3339 time; empty = never")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	sc, err := auth.ParseScope(*scope)
	if *name == "" {
		// Tokens are named in logs instead of being printed; default to
		// the scope and the day it was made.
		*name = fmt.Sprintf("%s-%s", *scope, time.Now().UTC().Format("20060102-150405"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkgfleet-api token create:", err)
		return 2
	}
	token, line, err := auth.New(*name, sc, *expires)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkgfleet-api token create:", err)
		return 1
	}
	fmt.Printf("token: %s\n\nAdd this line to HTTP.TokensFile (the token itself is not stored):\n%s\n", token, line)
	return 0
}
