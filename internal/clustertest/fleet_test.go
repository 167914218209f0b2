//go:build cluster

package clustertest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// fleet is a release of the chart the test installed, with an API client
// by pod IP and the CLI pointed at it.
type fleet struct {
	api *apiClient
	cli string // the pkgfleet CLI binary
	git string // the test's git host (gitHTTPS) with the example repositories
}

// install installs the chart as release name in ns with the values args
// and --wait, with what the workers need to clone from the test's git host
// on the bridge (Git.AllowedHosts, GIT_SSL_NO_VERIFY), and waits until
// every pod is Ready. The release goes with the namespace when the test
// ends (namespace deletes it, waiting for its pods, so that the next test
// has the node's CPU).
func (n node) install(t *testing.T, ns, name, what string, values ...string) *fleet {
	t.Helper()
	args := append([]string{"install", name, repoPath("charts", "pkgfleet"), "-n", ns, "--wait", "--timeout", "8m"}, values...)
	args = append(args,
		"--set-string", "config.Git.AllowedHosts="+n.hostIP,
		"--set-json", `api.extraEnv=[{"name":"GIT_SSL_NO_VERIFY","value":"true"}]`,
		"--set-json", `worker.extraEnv=[{"name":"GIT_SSL_NO_VERIFY","value":"true"}]`)
	begin := time.Now()
	n.helmCmd(t, args...)
	t.Logf("helm install --wait (%s): %s", what, time.Since(begin).Round(time.Second))
	n.podsReady(t, ns, time.Minute)
	token := strings.TrimSpace(n.k(t, "-n", ns, "get", "secret", name+"-admin-token", "-o", "jsonpath={.data.token}"))
	return &fleet{
		api: &apiClient{t: t, token: decodeBase64(t, token),
			base: "http://" + n.podIP(t, ns, selector(name, "api")) + ":4242"},
		cli: buildCLI(t),
		git: gitHTTPS(t, n, exampleRepos(t, time.Second)),
	}
}

// pkgfleet runs the CLI against the release's API and returns its output;
// it must succeed.
func (r *fleet) pkgfleet(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(r.cli, args...)
	cmd.Env = append(os.Environ(), "PKGFLEET_ADDRESS="+r.api.base, "PKGFLEET_TOKEN="+r.api.token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkgfleet %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
