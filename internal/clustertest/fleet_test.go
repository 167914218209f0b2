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
// every pod is Ready. It is uninstalled when the test ends, its pods waited
// for, so that the next test has the node's CPU.
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
	n.uninstallAtEnd(t, ns, name)
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

// uninstallAtEnd uninstalls release name of ns when the test ends, waiting
// until its pods are gone, before the namespace is deleted: the namespace
// controller, left to delete running pods itself, waits out their longest
// grace period (the workers' 315 s) before it looks again, which kept the
// next test from the node's CPU for minutes. On failure the release stays
// for the namespace's cleanup to log its pods.
func (n node) uninstallAtEnd(t *testing.T, ns, name string) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		begin := time.Now()
		out, code, err := run(5*time.Minute, nil, n.helm, "uninstall", name, "-n", ns, "--wait", "--cascade", "foreground", "--timeout", "4m")
		if err != nil || code != 0 {
			t.Errorf("helm uninstall %s: exit %d %v\n%s", name, code, err, out)
		}
		t.Logf("helm uninstall --wait of %s in %s: %s", name, ns, time.Since(begin).Round(time.Second))
	})
}
