// Command pkgfleet is the command-line client of the pkgfleet API.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/pkgfleet/pkgfleet/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	st, _ := os.Stdout.Stat()
	app := &cli.App{
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		IsTerminal: st != nil && st.Mode()&os.ModeCharDevice != 0,
	}
	os.Exit(cli.Main(ctx, os.Args[1:], app))
}
