// Package cli is the `pkgfleet` command: PPM's verbs (create, edit, delete,
// run, rerun, list, logs, cancel) over pkgfleet's HTTP API, with human or
// JSON output and live progress while builds run. It holds no state; the
// API is the only source of truth.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// App is one invocation's environment.
type App struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// IsTerminal says whether Stdout is a terminal (live progress lines).
	IsTerminal bool
	// PollInterval is how often --wait and --follow ask for news.
	PollInterval time.Duration

	address, token, output string
	client                 *client
}

// Main runs the CLI and returns the process exit status.
func Main(ctx context.Context, args []string, app *App) int {
	root := app.root()
	root.SetArgs(args)
	root.SetOut(app.Stdout)
	root.SetErr(app.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var fail *buildFailed
	if !errors.As(err, &fail) {
		fmt.Fprintln(app.Stderr, "pkgfleet: "+oneLine(err.Error()))
	}
	return 1
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	return s
}

// buildFailed ends a --wait whose build failed; progress already said so.
type buildFailed struct{ ids []int64 }

func (b *buildFailed) Error() string { return fmt.Sprintf("build(s) %v failed", b.ids) }

func (app *App) root() *cobra.Command {
	if app.Getenv == nil {
		app.Getenv = os.Getenv
	}
	if app.PollInterval == 0 {
		app.PollInterval = time.Second
	}
	root := &cobra.Command{
		Use:           "pkgfleet",
		Short:         "Manage pkgfleet: sources, git-builders and their builds",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if app.output != "human" && app.output != "json" {
				return fmt.Errorf("-o must be human or json, not %q", app.output)
			}
			addr := strings.TrimRight(app.address, "/")
			if !strings.HasPrefix(addr, "http://") && !strings.HasPrefix(addr, "https://") {
				return fmt.Errorf("--address %q must start with http:// or https://", addr)
			}
			if app.token == "" {
				app.token = app.Getenv("PKGFLEET_TOKEN")
			}
			app.client = &client{base: addr, token: app.token, http: &http.Client{Timeout: 5 * time.Minute}}
			return nil
		},
	}
	def := func(env, fallback string) string {
		if v := app.Getenv(env); v != "" {
			return v
		}
		return fallback
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&app.address, "address", "a", def("PKGFLEET_ADDRESS", "http://127.0.0.1:4242"), "pkgfleet API address (env PKGFLEET_ADDRESS)")
	// The token's default is read in PersistentPreRunE, not here, so that
	// --help never prints it.
	pf.StringVar(&app.token, "token", "", "API token (env PKGFLEET_TOKEN)")
	pf.StringVarP(&app.output, "output-format", "o", "human", "output format: human or json")

	create := &cobra.Command{Use: "create", Short: "Create a source or a git-builder"}
	create.AddCommand(app.createSource(), app.createBuilder(), app.createCredential(), app.createHook())
	edit := &cobra.Command{Use: "edit", Short: "Edit a git-builder, or where a git credential may be sent"}
	edit.AddCommand(app.editBuilder(), app.editCredential())
	del := &cobra.Command{Use: "delete", Short: "Delete a source or a git-builder"}
	del.AddCommand(app.deleteSource(), app.deleteBuilder(), app.deleteCredential(), app.deleteHook())
	run := &cobra.Command{Use: "run", Short: "Build a git-builder's branch head or newest tag"}
	run.AddCommand(app.runBuilder())
	rerun := &cobra.Command{Use: "rerun", Short: "Build a tag or commit of a git-builder again"}
	rerun.AddCommand(app.rerunBuilder())
	list := &cobra.Command{Use: "list", Short: "List sources, git-builders, builds, workers, hooks and their deliveries"}
	list.AddCommand(app.listSources(), app.listBuilders(), app.listBuilds(), app.listWorkers(), app.listCredentials(), app.listHooks(), app.listDeliveries())
	root.AddCommand(create, edit, del, run, rerun, list, app.logs(), app.cancel(), app.namespaces())
	return root
}

// print writes v as JSON, or calls human.
func (app *App) print(v any, human func(w io.Writer)) {
	if app.output == "json" {
		enc := json.NewEncoder(app.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
		return
	}
	human(app.Stdout)
}

func requireFlags(cmd *cobra.Command, names ...string) {
	for _, n := range names {
		_ = cmd.MarkFlagRequired(n)
	}
}
