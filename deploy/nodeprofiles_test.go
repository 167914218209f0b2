package deploy

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The worker's own security profiles, shipped by deploy/profiles and
// copied into the chart for its node-profiles DaemonSet.
const (
	seccompProfileFile    = "pkgfleet-worker.json"     // under the kubelet's seccomp root, profiles/
	appArmorProfileFile   = "pkgfleet-worker.apparmor" // loaded as appArmorProfileName
	appArmorProfileName   = "pkgfleet-worker"
	nodeProfilesNamespace = "pkgfleet-node-profiles" // values.yaml's nodeProfiles.namespace
)

var profileFiles = []string{seccompProfileFile, appArmorProfileFile}

// chartHasProfiles reports whether the chart ships the profiles its
// node-profiles DaemonSet installs.
func chartHasProfiles() bool {
	for _, f := range profileFiles {
		if _, err := os.Stat(repoPath(chartDir, "files", "profiles", f)); err != nil {
			return false
		}
	}
	return true
}

// The chart's files/profiles/ are exactly deploy/profiles/: what the
// DaemonSet puts on the nodes is what the profile tests check. -update
// copies them.
func TestChartShipsDeployProfiles(t *testing.T) {
	for _, f := range profileFiles {
		src, srcErr := os.ReadFile(repoPath("deploy", "profiles", f))
		dst := repoPath(chartDir, "files", "profiles", f)
		if *update && srcErr == nil {
			if err := os.MkdirAll(repoPath(chartDir, "files", "profiles"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, src, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, dstErr := os.ReadFile(dst)
		switch {
		case errors.Is(srcErr, fs.ErrNotExist) && errors.Is(dstErr, fs.ErrNotExist):
			// Not shipped yet by either; TestChartNodeProfilesRefuseWithoutProfiles
			// holds the chart to a clear refusal meanwhile.
		case srcErr != nil || dstErr != nil || !bytes.Equal(src, got):
			t.Errorf("charts/pkgfleet/files/profiles/%s is not a copy of deploy/profiles/%s (%v, %v); run:\n  go test ./deploy -run TestChartShipsDeployProfiles -update", f, f, srcErr, dstErr)
		}
	}
}

// Without the profile files the DaemonSet would install nothing: the chart
// refuses to render it and says how to get them.
func TestChartNodeProfilesRefuseWithoutProfiles(t *testing.T) {
	t.Parallel()
	if chartHasProfiles() {
		t.Skip("the chart ships the profiles; the node-profiles value set renders them")
	}
	_, err := helmTemplate(t, "--set", "nodeProfiles.enabled=true")
	if err == nil || !strings.Contains(err.Error(), "TestChartShipsDeployProfiles -update") {
		t.Errorf("nodeProfiles.enabled without profiles: %v; want the refusal naming the copy step", err)
	}
}

// checkNodeProfiles: the installer runs in its own privileged namespace,
// never the workers', writes the seccomp profile where the workers'
// localhostProfile points and loads the AppArmor profile they name.
func checkNodeProfiles(t *testing.T, r *rendered) {
	t.Helper()
	r.wantCount(t, "DaemonSet", 1)
	ns := r.namespaces[nodeProfilesNamespace]
	if ns == nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("no Namespace %s labelled enforce=privileged: %+v", nodeProfilesNamespace, ns)
	}
	ds := r.daemonSets[fullname+"-node-profiles"]
	if ds == nil {
		t.Fatalf("no DaemonSet %s-node-profiles", fullname)
	}
	if ds.Namespace != nodeProfilesNamespace || ds.Namespace == namespace {
		t.Errorf("DaemonSet in namespace %q, want %q", ds.Namespace, nodeProfilesNamespace)
	}
	pod := ds.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("DaemonSet containers %+v", pod.Containers)
	}
	c := pod.Containers[0]
	checkImageHasNoRegistryHost(t, ds.Name, c.Image)
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Errorf("the installer is not privileged; loading AppArmor policy needs it")
	}
	script := strings.Join(c.Command, " ")
	for _, want := range []string{
		"/host/var/lib/kubelet/seccomp/profiles/" + seccompProfileFile,
		"apparmor_parser --replace",
		"/etc/apparmor.d/" + appArmorProfileName,
	} {
		if !strings.Contains(script, want) {
			t.Errorf("installer script lacks %q:\n%s", want, script)
		}
	}
	var cm *corev1.ConfigMap
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil {
			cm = r.configMaps[v.ConfigMap.Name]
		}
	}
	if cm == nil || cm.Namespace != ds.Namespace {
		t.Fatalf("the installer's profiles ConfigMap is not rendered in its namespace")
	}
	for _, f := range profileFiles {
		if want := string(readRepoFile(t, chartDir, "files", "profiles", f)); cm.Data[f] != want {
			t.Errorf("ConfigMap key %s differs from files/profiles/%s", f, f)
		}
	}
}
