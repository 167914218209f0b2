//go:build cluster

package clustertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRestrictedValuesOnTheNode installs ci/restricted-seccomp-values.yaml
// (restricted-values.yaml without AppArmor, which this node's kernel has
// off) with nodeProfiles in a namespace at Pod Security level restricted,
// with --wait: the DaemonSet writes the seccomp profile under the kubelet's
// root, and the worker starts under it (Localhost seccomp) after its
// sandbox-check init container passed.
func TestRestrictedValuesOnTheNode(t *testing.T) {
	n := requireNode(t)
	const ns, release = "restricted", "pkgfleet"
	profiles := ns + "-node-profiles"
	n.namespace(t, ns, "restricted")
	n.volumes(t, ns, release)
	t.Cleanup(func() {
		_, _, _ = run(5*time.Minute, nil, n.kubectl, "delete", "namespace", profiles, "--wait=true", "--timeout=4m")
	})

	begin := time.Now()
	n.helmCmd(t, "install", release, repoPath("charts", "pkgfleet"), "-n", ns, "--wait", "--timeout", "8m",
		"-f", repoPath("charts", "pkgfleet", "ci", "restricted-seccomp-values.yaml"),
		"--set", "nodeProfiles.enabled=true",
		"--set", "nodeProfiles.namespace="+profiles,
		"--set", "nodeProfiles.kubeletRootDir="+n.kubeletRoot)
	t.Logf("helm install --wait (restricted, seccomp only): %s", time.Since(begin).Round(time.Second))
	n.uninstallAtEnd(t, ns, release)
	n.podsReady(t, ns, time.Minute)

	// The DaemonSet wrote the profile where the kubelet resolves it.
	written, err := os.ReadFile(filepath.Join(n.kubeletRoot, "seccomp", "profiles", "pkgfleet-worker.json"))
	if err != nil {
		t.Fatalf("the node profiles DaemonSet wrote no seccomp profile: %v", err)
	}
	shipped, err := os.ReadFile(repoPath("charts", "pkgfleet", "files", "profiles", "pkgfleet-worker.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(written)) != strings.TrimSpace(string(shipped)) {
		t.Errorf("the seccomp profile on the node is not the chart's files/profiles/pkgfleet-worker.json")
	}
	logs := n.k(t, "-n", profiles, "logs", "daemonset/"+release+"-node-profiles")
	if !strings.Contains(logs, "seccomp profile written") || !strings.Contains(logs, "AppArmor is not enabled on this node") {
		t.Errorf("the node profiles DaemonSet logged:\n%s", logs)
	}

	// The running worker pods run under the Localhost profile, with no
	// AppArmor field, in a namespace that enforces restricted.
	if got := n.k(t, "get", "namespace", ns, "-o", `jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}`); got != "restricted" {
		t.Fatalf("namespace %s enforces %q", ns, got)
	}
	pods := n.k(t, "-n", ns, "get", "pods", "-l", selector(release, "worker"), "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.securityContext.seccompProfile.type}:{.spec.securityContext.seccompProfile.localhostProfile} apparmor={.spec.securityContext.appArmorProfile.type}{"\n"}{end}`)
	lines := strings.Split(strings.TrimSpace(pods), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatal("no worker pods")
	}
	for _, l := range lines {
		if !strings.Contains(l, " Running Localhost:profiles/pkgfleet-worker.json apparmor=") || !strings.HasSuffix(l, "apparmor=") {
			t.Errorf("worker pod: %s; want Running under Localhost profiles/pkgfleet-worker.json, no AppArmor field", l)
		}
	}
	out := n.k(t, "-n", ns, "exec", "deploy/"+release+"-worker", "--", "pkgfleet-worker", "sandbox", "check")
	if !strings.Contains(out, "sandbox tier: masked-proc") {
		t.Errorf("sandbox check in the restricted worker:\n%s", out)
	}
	// The kernel applies the profile: the worker's status says seccomp mode 2.
	status := n.k(t, "-n", ns, "exec", "deploy/"+release+"-worker", "--", "grep", "^Seccomp:", "/proc/1/status")
	if !strings.Contains(status, "2") {
		t.Errorf("the worker's PID 1 is not under a seccomp filter: %s", status)
	}
}
