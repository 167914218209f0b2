package cli

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/spf13/cobra"
)

// readSecret reads a secret from a file, or from stdin for "-": secrets
// never travel as command-line arguments, where other users could see them.
func readSecret(path string, stdin io.Reader) (string, error) {
	if path == "" {
		return "", nil
	}
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("read secret: %v", err)
	}
	if strings.Contains(string(data), "PRIVATE KEY-----") {
		return string(data), nil // keys keep their final newline
	}
	return strings.TrimRight(string(data), "\r\n"), nil
}

// hostsHelp says what --host takes, for create and edit.
const hostsHelp = "where the credential may be sent: [https|ssh://]host[:port], host may start with *. for one subdomain label (repeat or comma-separate; the scheme defaults to --type's)"

func (app *App) createCredential() *cobra.Command {
	var name, typ, username, passwordFile, keyFile, passphraseFile, knownHostsFile string
	var hosts []string
	cmd := &cobra.Command{
		Use:   "git-credential",
		Short: "Store an ssh key or an https username and token for private repositories on the hosts given",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			stdin := cmd.InOrStdin()
			body := map[string]any{"name": name, "type": typ, "hosts": hosts}
			var err error
			switch typ {
			case apiv1.CredentialHTTPS:
				if passwordFile == "" {
					return fmt.Errorf("an https credential needs --password-file (a file holding the token, or - for stdin)")
				}
				body["username"] = username
				body["password"], err = readSecret(passwordFile, stdin)
			case apiv1.CredentialSSH:
				if keyFile == "" {
					return fmt.Errorf("an ssh credential needs --private-key-file")
				}
				var key, passphrase, known string
				if key, err = readSecret(keyFile, stdin); err == nil {
					if passphrase, err = readSecret(passphraseFile, stdin); err == nil {
						known, err = readSecret(knownHostsFile, stdin)
					}
				}
				body["private_key"], body["passphrase"], body["known_hosts"] = key, passphrase, known
			default:
				return fmt.Errorf("--type must be ssh or https")
			}
			if err != nil {
				return err
			}
			var info apiv1.CredentialInfo
			if err := app.client.do(cmd.Context(), "POST", "/api/v1/git-credentials", body, &info); err != nil {
				return err
			}
			app.print(info, func(w io.Writer) {
				fmt.Fprintf(w, "Git credential %s (%s) created for %s.\n", info.Name, info.Type, strings.Join(info.Hosts, ", "))
			})
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "credential name, used by git-builders' --credential")
	f.StringVar(&typ, "type", "", "ssh or https")
	f.StringSliceVar(&hosts, "host", nil, hostsHelp)
	f.StringVar(&username, "username", "", "https: user name")
	f.StringVar(&passwordFile, "password-file", "", "https: file holding the password or token (- for stdin)")
	f.StringVar(&keyFile, "private-key-file", "", "ssh: private key file")
	f.StringVar(&passphraseFile, "passphrase-file", "", "ssh: file holding the key's passphrase")
	f.StringVar(&knownHostsFile, "known-hosts-file", "", "ssh: known_hosts lines of its servers (e.g. from ssh-keyscan); unset, the fleet's Git.SSHKnownHostsFile")
	requireFlags(cmd, "name", "type", "host")
	return cmd
}

func (app *App) editCredential() *cobra.Command {
	var name, knownHostsFile string
	var hosts []string
	cmd := &cobra.Command{
		Use:   "git-credential",
		Short: "Set where a git credential may be sent (its secret stays as it is)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{"hosts": hosts}
			if cmd.Flags().Changed("known-hosts-file") {
				known, err := readSecret(knownHostsFile, cmd.InOrStdin())
				if err != nil {
					return err
				}
				body["known_hosts"] = known
			}
			var info apiv1.CredentialInfo
			if err := app.client.do(cmd.Context(), "PATCH", "/api/v1/git-credentials/"+url.PathEscape(name), body, &info); err != nil {
				return err
			}
			app.print(info, func(w io.Writer) {
				fmt.Fprintf(w, "Git credential %s may be sent to %s.\n", info.Name, strings.Join(info.Hosts, ", "))
			})
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "credential name")
	f.StringSliceVar(&hosts, "host", nil, hostsHelp+"; replaces its hosts")
	f.StringVar(&knownHostsFile, "known-hosts-file", "", "ssh: replaces its known_hosts lines")
	requireFlags(cmd, "name", "host")
	return cmd
}

func (app *App) listCredentials() *cobra.Command {
	return &cobra.Command{
		Use: "git-credentials", Short: "List git credentials (names, types and hosts; never secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res apiv1.Credentials
			if err := app.client.do(cmd.Context(), "GET", "/api/v1/git-credentials", nil, &res); err != nil {
				return err
			}
			app.print(res, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tTYPE\tHOSTS\tCREATED")
				for _, c := range res.Credentials {
					hosts := strings.Join(c.Hosts, ",")
					if hosts == "" {
						hosts = "(none: unusable until set)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Type, hosts, c.CreatedAt.Format(time.RFC3339))
				}
				tw.Flush()
			})
			return nil
		},
	}
}

func (app *App) deleteCredential() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use: "git-credential", Short: "Delete a git credential no git-builder uses", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := app.client.do(cmd.Context(), "DELETE", "/api/v1/git-credentials/"+url.PathEscape(name), nil, nil); err != nil {
				return err
			}
			app.print(map[string]string{"deleted": name}, func(w io.Writer) { fmt.Fprintf(w, "Git credential %s deleted.\n", name) })
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "credential name")
	requireFlags(cmd, "name")
	return cmd
}
