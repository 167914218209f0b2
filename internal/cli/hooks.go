package cli

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/spf13/cobra"
)

// hooksPath is where the hooks of a source, or of one of its builders
// (name not ""), are.
func hooksPath(source, name string) string {
	if name != "" {
		return builderPath(source, name) + "/hooks"
	}
	return "/api/v1/sources/" + url.PathEscape(source) + "/hooks"
}

// hookFlags names a hook's owner: a source, and a git-builder or not.
func hookFlags(cmd *cobra.Command, source, name *string) {
	cmd.Flags().StringVar(source, "source", "", "source name")
	cmd.Flags().StringVar(name, "name", "", "git-builder name (unset: the source's own hooks, told of every builder)")
	requireFlags(cmd, "source")
}

func (app *App) createHook() *cobra.Command {
	var source, name, secretFile string
	var in apiv1.NewHook
	cmd := &cobra.Command{
		Use:   "hook",
		Short: "Call a URL when a build of a source or git-builder fails or recovers (or every build)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if in.Secret, err = readSecret(secretFile, cmd.InOrStdin()); err != nil {
				return err
			}
			var h apiv1.Hook
			if err := app.client.do(cmd.Context(), "POST", hooksPath(source, name), in, &h); err != nil {
				return err
			}
			app.print(h, func(w io.Writer) { fmt.Fprintf(w, "Hook %s created: %s.\n", h.ID, h.URL) })
			return nil
		},
	}
	hookFlags(cmd, &source, &name)
	f := cmd.Flags()
	f.StringVar(&in.URL, "url", "", "http(s) URL to POST to")
	f.StringVar(&secretFile, "secret-file", "", "file holding the secret that signs each delivery (X-Hub-Signature-256), - for stdin; unset: unsigned")
	f.BoolVar(&in.EveryBuild, "every-build", false, "tell of every finished build, not only failures and recoveries")
	f.BoolVar(&in.Slack, "slack", false, `send Slack's {"text": …} instead of pkgfleet's JSON`)
	requireFlags(cmd, "url")
	return cmd
}

func (app *App) listHooks() *cobra.Command {
	var source, name string
	cmd := &cobra.Command{
		Use: "hooks", Short: "List the hooks of a source or git-builder", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res apiv1.Hooks
			if err := app.client.do(cmd.Context(), "GET", hooksPath(source, name), nil, &res); err != nil {
				return err
			}
			app.print(res, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tURL\tEVENTS\tBODY\tSIGNED")
				for _, h := range res.Hooks {
					events, body := "failure,recovery", "json"
					if h.EveryBuild {
						events = "every build"
					}
					if h.Slack {
						body = "slack"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", h.ID, h.URL, events, body, h.SecretSet)
				}
				tw.Flush()
			})
			return nil
		},
	}
	hookFlags(cmd, &source, &name)
	return cmd
}

func (app *App) deleteHook() *cobra.Command {
	var source, name, id string
	cmd := &cobra.Command{
		Use: "hook", Short: "Delete a hook", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := app.client.do(cmd.Context(), "DELETE", hooksPath(source, name)+"/"+url.PathEscape(id), nil, nil); err != nil {
				return err
			}
			app.print(map[string]string{"deleted": id}, func(w io.Writer) { fmt.Fprintf(w, "Hook %s deleted.\n", id) })
			return nil
		},
	}
	hookFlags(cmd, &source, &name)
	cmd.Flags().StringVar(&id, "id", "", "hook id (pkgfleet list hooks)")
	requireFlags(cmd, "id")
	return cmd
}

func (app *App) listDeliveries() *cobra.Command {
	var source, name, id string
	cmd := &cobra.Command{
		Use: "deliveries", Short: "List a hook's last delivery attempts", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res apiv1.HookDeliveries
			if err := app.client.do(cmd.Context(), "GET", hooksPath(source, name)+"/"+url.PathEscape(id)+"/deliveries", nil, &res); err != nil {
				return err
			}
			app.print(res, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "WHEN\tBUILD\tEVENT\tATTEMPT\tRESULT\tSTATUS\tERROR")
				for _, d := range res.Deliveries {
					status := "-"
					if d.Status != 0 {
						status = strconv.Itoa(d.Status)
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", d.At.Format(time.RFC3339), d.Build, d.Event, d.Attempt, d.Result, status, dash(d.Error))
				}
				tw.Flush()
			})
			return nil
		},
	}
	hookFlags(cmd, &source, &name)
	cmd.Flags().StringVar(&id, "id", "", "hook id (pkgfleet list hooks)")
	requireFlags(cmd, "id")
	return cmd
}
