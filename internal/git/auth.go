package git

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Auth is a credential for one remote. It reaches git through the child's
// environment and private files, never its arguments, so it shows in no
// process listing and no error message.
type Auth struct {
	Username, Password     string // https
	PrivateKey, Passphrase string // ssh
}

// WithAuth returns a copy of c that authenticates with a, and a cleanup
// that removes the private files it wrote (under tempDir).
func (c *Client) WithAuth(a *Auth, tempDir string) (*Client, func(), error) {
	nc := *c
	nc.Env = append([]string(nil), c.Env...)
	if a == nil {
		return &nc, func() {}, nil
	}
	if a.PrivateKey == "" {
		// A credential helper that answers from the environment; the
		// user's own helpers are reset first.
		nc.Env = append(nc.Env,
			"GIT_CONFIG_COUNT=2",
			"GIT_CONFIG_KEY_0=credential.helper", "GIT_CONFIG_VALUE_0=",
			"GIT_CONFIG_KEY_1=credential.helper",
			`GIT_CONFIG_VALUE_1=!f() { test "$1" = get && printf 'username=%s\npassword=%s\n' "$PKGFLEET_GIT_USERNAME" "$PKGFLEET_GIT_PASSWORD"; }; f`,
			"PKGFLEET_GIT_USERNAME="+a.Username,
			"PKGFLEET_GIT_PASSWORD="+a.Password,
		)
		return &nc, func() {}, nil
	}
	dir, err := os.MkdirTemp(tempDir, "pkgfleet-ssh-")
	if err != nil {
		return nil, nil, fmt.Errorf("credential: %w", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	keyFile := filepath.Join(dir, "id")
	key := a.PrivateKey
	if !strings.HasSuffix(key, "\n") {
		key += "\n" // ssh refuses a key without its final newline
	}
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("credential: %w", err)
	}
	ssh := "ssh -i " + keyFile + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=" + filepath.Join(dir, "known_hosts")
	if a.Passphrase != "" {
		askpass := filepath.Join(dir, "askpass")
		if err := os.WriteFile(askpass, []byte("#!/bin/sh\nprintf '%s\\n' \"$PKGFLEET_SSH_PASSPHRASE\"\n"), 0o700); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("credential: %w", err)
		}
		nc.Env = append(nc.Env, "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=none",
			"PKGFLEET_SSH_PASSPHRASE="+a.Passphrase)
	} else {
		ssh += " -o BatchMode=yes"
	}
	nc.Env = append(nc.Env, "GIT_SSH_COMMAND="+ssh)
	return &nc, cleanup, nil
}
