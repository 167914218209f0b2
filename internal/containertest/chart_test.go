//go:build containers

package containertest

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// chartVariants are the worker settings the chart offers, each with the
// measured row its rendered pod claims to be. Another variant (or a change
// of the chart's defaults) is one more line here.
var chartVariants = []struct {
	name string
	set  []string // helm --set values
	row  string   // the row of rows the worker pod's settings must map to
}{
	{"defaults", nil, "PPM's settings"},
	{"userNamespacedPod", []string{"worker.userNamespacedPod=true"}, "PPM's settings + systempaths=unconfined"},
}

// podSecurity is what the test reads of the rendered worker pod.
type podSecurity struct {
	annotations map[string]string
	hostUsers   *bool
	pod         securityContext
	container   securityContext
}

type securityContext struct {
	RunAsUser                *int64 `json:"runAsUser"`
	RunAsGroup               *int64 `json:"runAsGroup"`
	AllowPrivilegeEscalation *bool  `json:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool  `json:"readOnlyRootFilesystem"`
	Privileged               *bool  `json:"privileged"`
	ProcMount                string `json:"procMount"`
	Capabilities             *struct {
		Add  []string `json:"add"`
		Drop []string `json:"drop"`
	} `json:"capabilities"`
	SeccompProfile  *profile `json:"seccompProfile"`
	AppArmorProfile *profile `json:"appArmorProfile"`
}

type profile struct {
	Type             string `json:"type"`
	LocalhostProfile string `json:"localhostProfile"`
}

// dockerFlags maps the pod's security settings to the docker run options
// that give a container the same: the non-security part must equal
// workerFlags' and the --security-opt values one row's.
func (p podSecurity) dockerFlags(t *testing.T) (user string, capDrop []string, noNewPrivs, readOnly bool, security []string) {
	t.Helper()
	c := p.container
	pick := func(pod, ctr *int64) int64 {
		if ctr != nil {
			return *ctr
		}
		if pod != nil {
			return *pod
		}
		return -1
	}
	user = fmt.Sprintf("%d:%d", pick(p.pod.RunAsUser, c.RunAsUser), pick(p.pod.RunAsGroup, c.RunAsGroup))
	if c.Capabilities != nil {
		if len(c.Capabilities.Add) > 0 {
			t.Errorf("the worker adds capabilities %v", c.Capabilities.Add)
		}
		capDrop = c.Capabilities.Drop
	}
	if c.Privileged != nil && *c.Privileged {
		t.Errorf("the worker is privileged")
	}
	noNewPrivs = c.AllowPrivilegeEscalation != nil && !*c.AllowPrivilegeEscalation
	readOnly = c.ReadOnlyRootFilesystem != nil && *c.ReadOnlyRootFilesystem

	seccomp := c.SeccompProfile
	if seccomp == nil {
		seccomp = p.pod.SeccompProfile
	}
	switch {
	case seccomp == nil || seccomp.Type == "RuntimeDefault":
	case seccomp.Type == "Unconfined":
		security = append(security, "seccomp=unconfined")
	case seccomp.Type == "Localhost":
		// The kubelet reads Localhost profiles under its seccomp root; the
		// project ships them in deploy/profiles by the same file name.
		security = append(security, "seccomp=deploy/profiles/"+path.Base(seccomp.LocalhostProfile))
	default:
		t.Errorf("seccompProfile %+v", seccomp)
	}

	apparmor := c.AppArmorProfile
	if apparmor == nil {
		apparmor = p.pod.AppArmorProfile
	}
	annotation := p.annotations["container.apparmor.security.beta.kubernetes.io/worker"]
	var fromField, fromAnnotation string
	if apparmor != nil {
		switch apparmor.Type {
		case "Unconfined":
			fromField = "unconfined"
		case "Localhost":
			fromField = "localhost/" + apparmor.LocalhostProfile
		case "RuntimeDefault":
			fromField = "runtime/default"
		}
	}
	if annotation != "" {
		fromAnnotation = annotation
		if fromField != "" && fromField != fromAnnotation {
			t.Errorf("appArmorProfile says %s, the annotation %s", fromField, fromAnnotation)
		}
	}
	switch v := cmpOr(fromField, fromAnnotation); {
	case v == "" || v == "runtime/default":
	case v == "unconfined":
		security = append(security, "apparmor=unconfined")
	default:
		security = append(security, "apparmor="+strings.TrimPrefix(v, "localhost/"))
	}

	// An unmasked /proc in a pod of its own user namespace is what Docker's
	// systempaths=unconfined gives.
	if c.ProcMount == "Unmasked" {
		if p.hostUsers == nil || *p.hostUsers {
			t.Errorf("procMount Unmasked without hostUsers: false is refused by the kubelet")
		}
		security = append(security, "systempaths=unconfined")
	}
	return user, capDrop, noNewPrivs, readOnly, security
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestChartWorkerSettingsAreAMeasuredRow renders charts/pkgfleet and maps
// the worker pod's security settings to docker flags: they must be exactly
// the flags of the row the chart claims, so the tier measured for that row
// in Docker is the tier the chart's pods get.
func TestChartWorkerSettingsAreAMeasuredRow(t *testing.T) {
	helm := os.Getenv("PKGFLEET_HELM")
	if helm == "" {
		missing(t, "PKGFLEET_HELM names no helm (scripts/deploy-deps.sh builds the pinned one)")
	}
	kube := regexp.MustCompile(`(?m)^const kubeVersion = "([0-9.]+)"$`).FindSubmatch(mustRead(t, repoPath("deploy", "tools_test.go")))
	if kube == nil {
		t.Fatal("no kubeVersion in deploy/tools_test.go")
	}
	for _, v := range chartVariants {
		t.Run(v.name, func(t *testing.T) {
			want := rowNamed(t, v.row)
			args := []string{"template", "pkgfleet", repoPath("charts", "pkgfleet"), "--kube-version", string(kube[1]), "--show-only", "templates/worker-deployment.yaml"}
			for _, s := range v.set {
				args = append(args, "--set", s)
			}
			dir := t.TempDir()
			out, code, err := command(2*time.Minute, root, []string{"HELM_CACHE_HOME=" + dir, "HELM_CONFIG_HOME=" + dir, "HELM_DATA_HOME=" + dir}, helm, args...)
			if err != nil || code != 0 {
				t.Fatalf("helm %s: exit %d %v\n%s", strings.Join(args, " "), code, err, out)
			}
			p := workerPod(t, out)
			user, capDrop, nnp, ro, security := p.dockerFlags(t)
			if wantUser := flagValue(workerFlags, "--user"); user != wantUser {
				t.Errorf("worker runs as %s; the rows run it as %s", user, wantUser)
			}
			if !slices.Equal(capDrop, []string{flagValue(workerFlags, "--cap-drop")}) {
				t.Errorf("worker drops capabilities %v; the rows drop %s", capDrop, flagValue(workerFlags, "--cap-drop"))
			}
			if !nnp {
				t.Errorf("worker allows privilege escalation; the rows run with no-new-privileges")
			}
			if !ro {
				t.Errorf("worker's root filesystem is writable; the rows run --read-only")
			}
			if !slices.Equal(sorted(security), sorted(want.security)) {
				t.Errorf("worker pod maps to --security-opt %v; the row %q it claims (tier %s) is %v", security, want.name, want.tier, want.security)
			}
		})
	}
}

// workerPod reads the worker Deployment's pod template from helm's output.
func workerPod(t *testing.T, manifest string) podSecurity {
	t.Helper()
	var d struct {
		Kind string `json:"kind"`
		Spec struct {
			Template struct {
				Metadata struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
				Spec struct {
					HostUsers       *bool           `json:"hostUsers"`
					SecurityContext securityContext `json:"securityContext"`
					Containers      []struct {
						Name            string          `json:"name"`
						SecurityContext securityContext `json:"securityContext"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(manifest), &d); err != nil || d.Kind != "Deployment" {
		t.Fatalf("worker-deployment.yaml: kind %q %v\n%s", d.Kind, err, manifest)
	}
	spec := d.Spec.Template.Spec
	for _, c := range spec.Containers {
		if c.Name == "worker" {
			return podSecurity{annotations: d.Spec.Template.Metadata.Annotations, hostUsers: spec.HostUsers, pod: spec.SecurityContext, container: c.SecurityContext}
		}
	}
	t.Fatalf("the worker Deployment has no container named worker")
	return podSecurity{}
}

// flagValue is the value after name in a docker flag list.
func flagValue(flags []string, name string) string {
	if i := slices.Index(flags, name); i >= 0 && i+1 < len(flags) {
		return flags[i+1]
	}
	return ""
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
