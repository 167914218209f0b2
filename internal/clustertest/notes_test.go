//go:build cluster

package clustertest

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func decodeBase64(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("base64: %v", err)
	}
	return string(b)
}

// followNotes runs the commands of the release's NOTES.txt as printed, in
// one shell, in order, with kubectl and the CLI on PATH: each must succeed
// and say what the notes promise. The one command it cannot run as
// printed is the git-builder of https://github.com/OWNER/REPO (a
// placeholder, and this machine has no network); the builds subtest runs
// that command with the test's git host.
func followNotes(t *testing.T, n node, ns, release, cli string) {
	notes := n.helmCmd(t, "get", "notes", release, "-n", ns)
	var script []string
	script = append(script, "set -euo pipefail",
		fmt.Sprintf("export PATH=%s:%s:$PATH", filepath.Dir(n.kubectl), filepath.Dir(cli)),
		"pf=; trap '[ -z \"$pf\" ] || kill $pf' EXIT")
	ran := map[string]bool{}
	for _, line := range strings.Split(notes, "\n") {
		cmd := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(cmd, "kubectl ") && strings.Contains(cmd, " port-forward "):
			script = append(script, "echo '+ "+cmd+"'", cmd+" >&2 & pf=$!")
			ran["port-forward"] = true
		case strings.HasPrefix(cmd, "kubectl ") && strings.Contains(cmd, "sandbox check"):
			script = append(script, "echo '+ "+cmd+"'", "out=$("+cmd+")", `echo "$out"`, `echo "SANDBOX<$out>"`)
			ran["sandbox check"] = true
		case strings.HasPrefix(cmd, "kubectl "):
			script = append(script, "echo '+ "+cmd+"'", cmd)
			ran[strings.Fields(cmd)[3]] = true
		case strings.HasPrefix(cmd, "export PKGFLEET_ADDRESS="):
			script = append(script, cmd,
				// The port-forward listens once kubectl has reached the pod.
				`for i in $(seq 1 120); do curl -fsS "$PKGFLEET_ADDRESS/readyz" >/dev/null 2>&1 && break; sleep 0.5; done`,
				`echo "READYZ<$(curl -fsS "$PKGFLEET_ADDRESS/readyz")>"`)
			ran["address"] = true
		case strings.HasPrefix(cmd, "export PKGFLEET_TOKEN="):
			script = append(script, cmd, `[ -n "$PKGFLEET_TOKEN" ] && echo TOKEN-SET`)
			ran["token"] = true
		case strings.HasPrefix(cmd, "pkgfleet create git-builder") && strings.Contains(cmd, "OWNER/REPO"):
			t.Logf("not run (placeholder URL, no network): %s", cmd)
		case strings.HasPrefix(cmd, "pkgfleet create "):
			script = append(script, "echo '+ "+cmd+"'", cmd, "pkgfleet list sources")
			ran["pkgfleet"] = true
		}
	}
	for _, want := range []string{"port-forward", "sandbox check", "address", "token", "pkgfleet", "get", "describe"} {
		if !ran[want] {
			t.Errorf("NOTES.txt has no %s command any more; this test follows it:\n%s", want, notes)
		}
	}
	file := filepath.Join(t.TempDir(), "notes.sh")
	if err := os.WriteFile(file, []byte(strings.Join(script, "\n")+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, code, err := run(5*time.Minute, nil, "bash", file)
	t.Logf("NOTES.txt's commands:\n%s", out)
	if err != nil || code != 0 {
		t.Fatalf("NOTES.txt's commands: exit %d %v\n%s", code, err, strings.Join(script, "\n"))
	}
	for _, want := range []string{"SANDBOX<sandbox tier: masked-proc", "READYZ<", "TOKEN-SET", "r-packages"} {
		if !strings.Contains(out, want) {
			t.Errorf("NOTES.txt's commands did not print %q", want)
		}
	}
	if !strings.Contains(notes, `"sandbox tier: masked-proc"`) {
		t.Errorf("NOTES.txt no longer promises the masked-proc tier for the defaults:\n%s", notes)
	}
}
