package git

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Auth is a credential for the remotes it is bound to. It reaches git
// through the child's environment and private files, never its arguments,
// so it shows in no process listing and no error message.
type Auth struct {
	// Hosts are where the credential may be sent; with none, WithAuth
	// refuses it.
	Hosts                  []HostPattern
	Username, Password     string // https
	PrivateKey, Passphrase string // ssh
	// KnownHosts (known_hosts lines) or else KnownHostsFile is what an ssh
	// server's host key must match; ssh refuses any other server before it
	// offers the key.
	KnownHosts, KnownHostsFile string
}

// boundSh is sh that sets ok when scheme $p and host $h (as git or ssh
// name it: host, host:port, [v6] or [v6]:port; port $d when none) match
// one of $PKGFLEET_GIT_HOSTS (canonical patterns, scheme://host:port, the
// host possibly *.domain for one label). A host with any character a host
// name cannot hold (a pattern's "*", say) matches nothing. It is the one
// shell copy of HostPattern.Match, which the credential helper and the ssh
// command both run.
const boundSh = `
	set -f
	ok=
	h=$(printf '%s' "$h" | tr A-Z a-z)
	case "$h" in "" | *[!]a-z0-9.:_[-]*) h=invalid ;; esac
	case "$h" in *]) h="$h:$d" ;; \[*|*:*) ;; *) h="$h:$d" ;; esac
	e="$p://$h"
	for a in $PKGFLEET_GIT_HOSTS; do
		case "$a" in
		"$e") ok=1 ;;
		*://\*.*)
			s=${a#*://\*}
			case "$e" in "${a%%://*}://"*"$s")
				l=${e#*://}
				l=${l%"$s"}
				case "$l" in "" | *[!a-z0-9_-]*) ;; *) ok=1 ;; esac ;;
			esac ;;
		esac
	done
	case "$h" in invalid:*) ok= ;; esac
`

// credentialHelper answers git's "get" only when the protocol and
// host:port that git asks for match the credential's hosts. git asks for
// the URL it is about to send to, and after a redirect it asks afresh for
// the redirect's target (http.c resets its credential to the new URL), so
// a redirect to another host or port gets nothing. The check is in the
// helper, not only at builder validation, because git alone knows where a
// request finally goes (redirects, submodules). The user's own helpers
// are reset before it.
const credentialHelper = `!f() {
	test "$1" = get || return 0
	p= h= d=443
	while IFS= read -r l && test -n "$l"; do
		case "$l" in protocol=*) p=${l#protocol=} ;; host=*) h=${l#host=} ;; esac
	done` + boundSh + `
	if test -n "$ok"; then printf 'username=%s\npassword=%s\n' "$PKGFLEET_GIT_USERNAME" "$PKGFLEET_GIT_PASSWORD"; fi
}; f`

// sshBound runs ssh only for a destination the credential is bound to.
// git runs it as the OpenSSH variant (GIT_SSH_VARIANT=ssh), with
// [-o option] [-4|-6] [-p port] [user@]host command after the ssh command
// (its first argument is the program): a submodule or any other
// destination than the builder's checked URL is refused here, before ssh
// connects, even when the known hosts list it.
const sshBound = `#!/bin/sh
port=22 dest= next=x
for arg; do
	case "$next" in
	p) port=$arg; next=; continue ;;
	x) next=; continue ;;
	esac
	case "$arg" in
	-p) next=p ;;
	-[BbcDEeFIiJLlmOoQRSWw]) next=x ;;
	-*) ;;
	*) dest=$arg; break ;;
	esac
done
p=ssh d=$port h=${dest##*@}
case "$h" in *:*) h="[$h]" ;; esac
h="$h:$port"` + boundSh + `
if test -z "$ok"; then
	echo "pkgfleet: this ssh credential may not be sent to $h (its hosts: $PKGFLEET_GIT_HOSTS)" >&2
	exit 1
fi
exec "$@"
`

// WithAuth returns a copy of c that authenticates with a, and a cleanup
// that removes the private files it wrote (under tempDir).
func (c *Client) WithAuth(a *Auth, tempDir string) (*Client, func(), error) {
	nc := *c
	nc.Env = append([]string(nil), c.Env...)
	if a == nil {
		return &nc, func() {}, nil
	}
	if len(a.Hosts) == 0 {
		return nil, nil, errors.New("credential: it names no hosts it may be sent to")
	}
	hosts := make([]string, len(a.Hosts))
	for i, h := range a.Hosts {
		hosts[i] = h.String()
	}
	nc.Env = append(nc.Env, "PKGFLEET_GIT_HOSTS="+strings.Join(hosts, " "))
	nc.auth = a
	if a.PrivateKey == "" {
		nc.Env = append(nc.Env,
			"GIT_CONFIG_COUNT=2",
			"GIT_CONFIG_KEY_0=credential.helper", "GIT_CONFIG_VALUE_0=",
			"GIT_CONFIG_KEY_1=credential.helper", "GIT_CONFIG_VALUE_1="+credentialHelper,
			"PKGFLEET_GIT_USERNAME="+a.Username,
			"PKGFLEET_GIT_PASSWORD="+a.Password,
		)
		return &nc, func() {}, nil
	}
	if a.KnownHosts == "" && a.KnownHostsFile == "" {
		return nil, nil, errors.New("credential: an ssh key needs known hosts (the credential's known_hosts or Git.SSHKnownHostsFile)")
	}
	dir, err := os.MkdirTemp(tempDir, "pkgfleet-ssh-")
	if err != nil {
		return nil, nil, fmt.Errorf("credential: %w", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	fail := func(err error) (*Client, func(), error) {
		cleanup()
		return nil, nil, fmt.Errorf("credential: %w", err)
	}
	keyFile := filepath.Join(dir, "id")
	key := a.PrivateKey
	if !strings.HasSuffix(key, "\n") {
		key += "\n" // ssh refuses a key without its final newline
	}
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		return fail(err)
	}
	knownHosts := a.KnownHostsFile
	if a.KnownHosts != "" {
		knownHosts = filepath.Join(dir, "known_hosts")
		if err := os.WriteFile(knownHosts, []byte(a.KnownHosts+"\n"), 0o600); err != nil {
			return fail(err)
		}
	}
	batch := a.Passphrase == ""
	if !batch {
		askpass := filepath.Join(dir, "askpass")
		if err := os.WriteFile(askpass, []byte("#!/bin/sh\nprintf '%s\\n' \"$PKGFLEET_SSH_PASSPHRASE\"\n"), 0o700); err != nil {
			return fail(err)
		}
		nc.Env = append(nc.Env, "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=none",
			"PKGFLEET_SSH_PASSPHRASE="+a.Passphrase)
	}
	bound := filepath.Join(dir, "ssh-bound")
	if err := os.WriteFile(bound, []byte(sshBound), 0o700); err != nil {
		return fail(err)
	}
	nc.Env = append(nc.Env, "GIT_SSH_VARIANT=ssh", "GIT_SSH_COMMAND="+shellQuote(bound)+" "+sshCommand(keyFile, knownHosts, batch))
	return &nc, cleanup, nil
}

// sshCommand is the one place the ssh command of a credential is built
// (sshBound runs it for a bound destination only). The key is offered
// only to a server whose host key is in knownHosts
// (StrictHostKeyChecking=yes: an unknown or changed key ends the
// connection before authentication), so a DNS answer that points
// elsewhere gets nothing; the system's known hosts are not read, and
// nothing is added to the list.
func sshCommand(keyFile, knownHosts string, batch bool) string {
	args := []string{"ssh", "-i", shellQuote(keyFile), "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + shellQuote(knownHosts),
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no"}
	if batch {
		args = append(args, "-o", "BatchMode=yes") // no passphrase: never prompt
	}
	return strings.Join(args, " ")
}

// shellQuote quotes s for sh, which runs GIT_SSH_COMMAND.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
