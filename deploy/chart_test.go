package deploy

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/pkgfleet/pkgfleet/internal/auth"
	"github.com/pkgfleet/pkgfleet/internal/config"
)

const (
	chartDir  = "charts/pkgfleet"
	release   = "pf"
	namespace = "pkgfleet"
	fullname  = "pf-pkgfleet"
	configDir = "/etc/pkgfleet"
)

// A valueSet is one way to install the chart, with what it must render.
type valueSet struct {
	name string
	file string // under charts/pkgfleet/ci; "" for the defaults
	// existing are the Secrets and PVCs the values point at instead of
	// letting the chart create them.
	existing    []string
	concurrency int
	grace       time.Duration // Worker.ShutdownGrace
	margin      int64         // terminationGracePeriodSeconds - grace
	seccomp     corev1.SeccompProfileType
	apparmor    corev1.AppArmorProfileType
	check       func(t *testing.T, r *rendered)
}

var valueSets = []valueSet{
	{
		name: "defaults", concurrency: 2, grace: 300 * time.Second, margin: 15,
		seccomp: corev1.SeccompProfileTypeUnconfined, apparmor: corev1.AppArmorProfileTypeUnconfined,
		check: func(t *testing.T, r *rendered) {
			r.wantCount(t, "StatefulSet", 1)
			r.wantCount(t, "PersistentVolumeClaim", 1)
			r.wantCount(t, "NetworkPolicy", 3)
			r.wantCount(t, "PodDisruptionBudget", 2)
			r.wantCount(t, "ServiceMonitor", 0)
			r.wantCount(t, "PrometheusRule", 0)
			r.wantCount(t, "ScaledObject", 0)
			r.wantCount(t, "Ingress", 0)
			if w := r.worker(t); w.Spec.Replicas == nil || *w.Spec.Replicas != 2 {
				t.Errorf("worker replicas = %v, want 2", w.Spec.Replicas)
			}
			redis := r.statefulSets[fullname+"-redis"]
			if redis == nil {
				t.Fatalf("no Redis StatefulSet")
			}
			cmd := strings.Join(redis.Spec.Template.Spec.Containers[0].Command, " ")
			for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction", "--dir /data"} {
				if !strings.Contains(cmd, want) {
					t.Errorf("Redis runs without %q: %s", want, cmd)
				}
			}
			if len(redis.Spec.VolumeClaimTemplates) != 1 || redis.Spec.VolumeClaimTemplates[0].Name != "data" {
				t.Errorf("Redis has no data PVC template")
			}
			if _, ok := r.secrets[fullname+"-admin-token"]; !ok {
				t.Errorf("no generated admin token Secret")
			}
			tokens := r.secrets[fullname+"-tokens"]
			if tokens == nil || !regexp.MustCompile(`(?m)^helm-admin admin sha256:[0-9a-f]{64}$`).MatchString(tokens.StringData["tokens"]) {
				t.Errorf("tokens Secret has no admin line: %v", tokens)
			}
			// The API accepts the generated token as admin.
			tokensFile := writeTemp(t, tokens.StringData["tokens"])
			ts, err := auth.Load(tokensFile)
			if err != nil {
				t.Fatalf("the API would refuse the rendered tokens file: %v", err)
			}
			tok, ok := ts.Check(string(r.secrets[fullname+"-admin-token"].Data["token"]))
			if !ok || tok.Scope != auth.Admin {
				t.Errorf("the generated admin token is not an admin token of the tokens file: %+v %v", tok, ok)
			}
			key := r.secrets[fullname+"-credential-key"]
			if key.Annotations["helm.sh/resource-policy"] != "keep" {
				t.Errorf("the generated credential key is not kept on uninstall")
			}
			if n := len(strings.TrimSpace(string(key.Data["credential.key"]))); n < 32 {
				t.Errorf("the generated credential key has %d bytes; pkgfleet needs 32", n)
			}
			if w := r.worker(t); w.Spec.Template.Annotations["container.apparmor.security.beta.kubernetes.io/worker"] != "unconfined" {
				t.Errorf("worker lacks the AppArmor unconfined annotation")
			}
		},
	},
	{
		name: "external-redis", file: "external-redis-values.yaml",
		existing:    []string{"pkgfleet-redis", "pkgfleet-tokens", "pkgfleet-credential-key", "pkgfleet-artifacts", "pkgfleet-index"},
		concurrency: 2, grace: 300 * time.Second, margin: 15,
		seccomp: corev1.SeccompProfileTypeUnconfined, apparmor: corev1.AppArmorProfileTypeUnconfined,
		check: func(t *testing.T, r *rendered) {
			r.wantCount(t, "StatefulSet", 0)
			r.wantCount(t, "PersistentVolumeClaim", 0)
			r.wantCount(t, "Secret", 0)
			r.wantCount(t, "NetworkPolicy", 2)
			if _, ok := r.services[fullname+"-redis"]; ok {
				t.Errorf("a Redis Service is rendered for an external Redis")
			}
			cfg, _ := r.config(t)
			if cfg.Redis.Address != "redis.example.internal:6379" || cfg.Redis.DB != 2 {
				t.Errorf("Redis = %s db %d, want the external one", cfg.Redis.Address, cfg.Redis.DB)
			}
			if cfg.Git.BuildConcurrency != 10 || cfg.Git.PollInterval != 2*time.Minute || !cfg.Git.BuildNetwork {
				t.Errorf("values.config did not reach the config: %+v", cfg.Git)
			}
			for _, name := range []string{fullname + "-api", fullname + "-worker"} {
				c := r.deployments[name].Spec.Template.Spec.Containers[0]
				ref := envSecret(c, "PKGFLEET_REDIS_PASSWORD")
				if ref == nil || ref.Name != "pkgfleet-redis" || ref.Key != "password" {
					t.Errorf("%s: Redis password from %v, want pkgfleet-redis/password", name, ref)
				}
			}
			// The index URL comes from its Secret, to the workers only, and
			// the ConfigMap holds none.
			if cfg.Git.PythonIndexURL != "" || cfg.Git.RRepositoryURL != "" {
				t.Errorf("index URLs in the ConfigMap: %q %q", cfg.Git.PythonIndexURL, cfg.Git.RRepositoryURL)
			}
			wc := container(t, r.worker(t), "worker")
			if ref := envSecret(wc, "PKGFLEET_GIT_PYTHONINDEXURL"); ref == nil || ref.Name != "pkgfleet-index" || ref.Key != "pypi-url" {
				t.Errorf("worker: Git.PythonIndexURL from %v, want pkgfleet-index/pypi-url", ref)
			}
			if ref := envSecret(wc, "PKGFLEET_GIT_RREPOSITORYURL"); ref != nil {
				t.Errorf("worker: Git.RRepositoryURL from %v although its key is empty", ref)
			}
			if ref := envSecret(container(t, r.deployments[fullname+"-api"], "api"), "PKGFLEET_GIT_PYTHONINDEXURL"); ref != nil {
				t.Errorf("the API gets the index URL, which only the workers' doors use: %v", ref)
			}
		},
	},
	{
		name: "no-monitoring", file: "no-monitoring-values.yaml",
		concurrency: 2, grace: 300 * time.Second, margin: 15,
		seccomp: corev1.SeccompProfileTypeUnconfined, apparmor: corev1.AppArmorProfileTypeUnconfined,
		check: func(t *testing.T, r *rendered) {
			for _, kind := range []string{"ServiceMonitor", "PrometheusRule", "ScaledObject", "NetworkPolicy", "PodDisruptionBudget"} {
				r.wantCount(t, kind, 0)
			}
			if _, ok := r.configMaps[fullname+"-dashboard"]; ok {
				t.Errorf("the Grafana dashboard is rendered with monitoring off")
			}
			if _, ok := r.secrets[fullname+"-admin-token"]; ok {
				t.Errorf("an admin token is generated although generateAdminToken is false")
			}
			ts, err := auth.Load(writeTemp(t, r.secrets[fullname+"-tokens"].StringData["tokens"]))
			if err != nil {
				t.Errorf("the API would refuse the tokens file from api.tokens.lines: %v", err)
			} else if ts.Len() != 1 {
				t.Errorf("tokens file from api.tokens.lines holds %d tokens, want 1", ts.Len())
			}
			cfg, _ := r.config(t)
			if cfg.Git.CredentialKeyFile != "" {
				t.Errorf("CredentialKeyFile = %q without a key", cfg.Git.CredentialKeyFile)
			}
			redis := r.statefulSets[fullname+"-redis"].Spec.Template.Spec.Containers[0]
			if ref := envSecret(redis, "REDIS_PASSWORD"); ref == nil || ref.Name != fullname+"-redis" {
				t.Errorf("Redis runs without the password Secret: %v", ref)
			}
			if ref := envSecret(r.worker(t).Spec.Template.Spec.Containers[0], "PKGFLEET_REDIS_PASSWORD"); ref == nil || ref.Name != fullname+"-redis" {
				t.Errorf("workers do not get the Redis password: %v", ref)
			}
		},
	},
	{
		name: "autoscaling", file: "autoscaling-values.yaml",
		concurrency: 4, grace: 900 * time.Second, margin: 15,
		seccomp: corev1.SeccompProfileTypeLocalhost, apparmor: corev1.AppArmorProfileTypeUnconfined,
		check: func(t *testing.T, r *rendered) {
			r.wantCount(t, "ServiceMonitor", 2)
			r.wantCount(t, "PrometheusRule", 1)
			r.wantCount(t, "ScaledObject", 1)
			r.wantCount(t, "Ingress", 1)
			w := r.worker(t)
			if w.Spec.Replicas != nil {
				t.Errorf("worker Deployment sets replicas (%d) while KEDA scales it", *w.Spec.Replicas)
			}
			so := r.scaledObjects[fullname+"-worker"]
			if so.Spec.ScaleTargetRef.Name != w.Name || *so.Spec.MinReplicaCount != 2 || *so.Spec.MaxReplicaCount != 20 {
				t.Errorf("ScaledObject %+v does not scale the worker Deployment 2..20", so.Spec)
			}
			if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "prometheus" ||
				so.Spec.Triggers[0].Metadata["threshold"] != "4" ||
				!strings.Contains(so.Spec.Triggers[0].Metadata["query"], `namespace="pkgfleet"`) {
				t.Errorf("ScaledObject trigger %+v: want prometheus, threshold = worker concurrency 4, this namespace", so.Spec.Triggers)
			}
			checkPromQL(t, []string{so.Spec.Triggers[0].Metadata["query"]})
			sm := r.serviceMonitors[fullname+"-api"]
			if a := sm.Spec.Endpoints[0].Authorization; a == nil || a.Credentials.Name != "pkgfleet-metrics-token" {
				t.Errorf("API ServiceMonitor sends no token: %+v", sm.Spec.Endpoints[0])
			}
			pod := w.Spec.Template.Spec
			if pod.HostUsers == nil || *pod.HostUsers {
				t.Errorf("userNamespacedPod: hostUsers = %v, want false", pod.HostUsers)
			}
			c := pod.Containers[0]
			if c.SecurityContext.ProcMount == nil || *c.SecurityContext.ProcMount != corev1.UnmaskedProcMount {
				t.Errorf("userNamespacedPod: procMount = %v, want Unmasked", c.SecurityContext.ProcMount)
			}
			if len(pod.InitContainers) != 1 || !slices.Equal(pod.InitContainers[0].Args, []string{"sandbox", "check"}) {
				t.Errorf("sandboxCheck: init containers %+v", pod.InitContainers)
			}
			if p := pod.SecurityContext.SeccompProfile; p.LocalhostProfile == nil || *p.LocalhostProfile != "profiles/pkgfleet-worker.json" {
				t.Errorf("Localhost seccomp profile %+v", p)
			}
		},
	},
	{
		name: "restricted", file: "restricted-values.yaml",
		concurrency: 2, grace: 300 * time.Second, margin: 15,
		seccomp: corev1.SeccompProfileTypeLocalhost, apparmor: corev1.AppArmorProfileTypeLocalhost,
		check: func(t *testing.T, r *rendered) {
			checkLocalhostProfiles(t, r)
			r.wantCount(t, "DaemonSet", 0)
			pod := r.worker(t).Spec.Template.Spec
			if len(pod.InitContainers) != 1 {
				t.Errorf("sandboxCheck: init containers %+v", pod.InitContainers)
			}
		},
	},
	{
		name: "s3", file: "s3-values.yaml", existing: []string{"pkgfleet-s3"},
		concurrency: 2, grace: 300 * time.Second, margin: 15,
		seccomp: corev1.SeccompProfileTypeUnconfined, apparmor: corev1.AppArmorProfileTypeUnconfined,
		check: checkS3Values,
	},
	{
		name: "s3-irsa", file: "s3-irsa-values.yaml",
		concurrency: 2, grace: 300 * time.Second, margin: 15,
		seccomp: corev1.SeccompProfileTypeUnconfined, apparmor: corev1.AppArmorProfileTypeUnconfined,
		check: checkS3IRSAValues,
	},
	{
		name: "redis-sentinel", file: "redis-sentinel-values.yaml",
		concurrency: 2, grace: 300 * time.Second, margin: 15,
		seccomp: corev1.SeccompProfileTypeUnconfined, apparmor: corev1.AppArmorProfileTypeUnconfined,
		check: checkRedisSentinelValues,
	},
	{
		name: "external-sentinel", file: "external-sentinel-values.yaml",
		existing:    []string{"pkgfleet-redis", "pkgfleet-redis-sentinel"},
		concurrency: 2, grace: 300 * time.Second, margin: 15,
		seccomp: corev1.SeccompProfileTypeUnconfined, apparmor: corev1.AppArmorProfileTypeUnconfined,
		check: checkExternalSentinelValues,
	},
	{
		name: "node-profiles", file: "node-profiles-values.yaml",
		concurrency: 2, grace: 300 * time.Second, margin: 15,
		seccomp: corev1.SeccompProfileTypeLocalhost, apparmor: corev1.AppArmorProfileTypeLocalhost,
		check: func(t *testing.T, r *rendered) {
			checkLocalhostProfiles(t, r)
			checkNodeProfiles(t, r)
		},
	},
}

// checkLocalhostProfiles: the worker uses the profiles of deploy/profiles
// by the names the node-profiles DaemonSet installs them under.
func checkLocalhostProfiles(t *testing.T, r *rendered) {
	t.Helper()
	w := r.worker(t)
	psc := w.Spec.Template.Spec.SecurityContext
	if p := psc.SeccompProfile; p.LocalhostProfile == nil || *p.LocalhostProfile != "profiles/"+seccompProfileFile {
		t.Errorf("Localhost seccomp profile %+v, want profiles/%s", p, seccompProfileFile)
	}
	if p := psc.AppArmorProfile; p.LocalhostProfile == nil || *p.LocalhostProfile != appArmorProfileName {
		t.Errorf("Localhost AppArmor profile %+v, want %s", p, appArmorProfileName)
	}
	if a := w.Spec.Template.Annotations["container.apparmor.security.beta.kubernetes.io/worker"]; a != "localhost/"+appArmorProfileName {
		t.Errorf("AppArmor annotation %q, want localhost/%s", a, appArmorProfileName)
	}
}

// chartValueSets are the valueSets the chart can render: node-profiles
// only once the chart ships the profiles (TestChartShipsDeployProfiles).
func chartValueSets() []valueSet {
	if chartHasProfiles() {
		return valueSets
	}
	return slices.DeleteFunc(slices.Clone(valueSets), func(vs valueSet) bool { return vs.name == "node-profiles" })
}

// rendered is the output of helm template, decoded.
type rendered struct {
	kinds           map[string]int
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	services        map[string]*corev1.Service
	pvcs            map[string]*corev1.PersistentVolumeClaim
	serviceAccounts map[string]*corev1.ServiceAccount
	deployments     map[string]*appsv1.Deployment
	daemonSets      map[string]*appsv1.DaemonSet
	namespaces      map[string]*corev1.Namespace
	statefulSets    map[string]*appsv1.StatefulSet
	pdbs            map[string]*policyv1.PodDisruptionBudget
	netpols         map[string]*networkingv1.NetworkPolicy
	ingresses       map[string]*networkingv1.Ingress
	serviceMonitors map[string]*serviceMonitor
	prometheusRules map[string]*prometheusRule
	scaledObjects   map[string]*scaledObject
	metas           []metav1.ObjectMeta
}

// The custom resources, with the fields the chart uses; unknown fields
// fail the strict decoding like those of the built-in kinds.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			Authorization *struct {
				Type        string                   `json:"type"`
				Credentials corev1.SecretKeySelector `json:"credentials"`
			} `json:"authorization,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ruleFile `json:"spec"`
}

type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

func helmTemplate(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	base := []string{"template", release, repoPath(chartDir), "--namespace", namespace, "--kube-version", kubeVersion}
	return runErr(helmEnv(t), helm(t), append(base, args...)...)
}

func render(t *testing.T, vs valueSet) *rendered {
	t.Helper()
	var args []string
	if vs.file != "" {
		args = append(args, "-f", repoPath(chartDir, "ci", vs.file))
	}
	out, err := helmTemplate(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return parseRendered(t, out)
}

// parseRendered reads helm template's output by kind and name.
func parseRendered(t *testing.T, out []byte) *rendered {
	t.Helper()
	r := &rendered{
		kinds: map[string]int{}, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		services: map[string]*corev1.Service{}, pvcs: map[string]*corev1.PersistentVolumeClaim{},
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		deployments:     map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		daemonSets: map[string]*appsv1.DaemonSet{}, namespaces: map[string]*corev1.Namespace{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, netpols: map[string]*networkingv1.NetworkPolicy{},
		ingresses:       map[string]*networkingv1.Ingress{},
		serviceMonitors: map[string]*serviceMonitor{}, prometheusRules: map[string]*prometheusRule{},
		scaledObjects: map[string]*scaledObject{},
	}
	for _, doc := range docSeparator.Split(string(out), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, doc)
		}
		var meta *metav1.ObjectMeta
		key := tm.APIVersion + " " + tm.Kind
		switch key {
		case "v1 ConfigMap":
			meta = decode(t, doc, r.configMaps)
		case "v1 Secret":
			meta = decode(t, doc, r.secrets)
		case "v1 Service":
			meta = decode(t, doc, r.services)
		case "v1 PersistentVolumeClaim":
			meta = decode(t, doc, r.pvcs)
		case "v1 ServiceAccount":
			meta = decode(t, doc, r.serviceAccounts)
		case "apps/v1 Deployment":
			meta = decode(t, doc, r.deployments)
		case "apps/v1 StatefulSet":
			meta = decode(t, doc, r.statefulSets)
		case "apps/v1 DaemonSet":
			meta = decode(t, doc, r.daemonSets)
		case "v1 Namespace":
			meta = decode(t, doc, r.namespaces)
		case "policy/v1 PodDisruptionBudget":
			meta = decode(t, doc, r.pdbs)
		case "networking.k8s.io/v1 NetworkPolicy":
			meta = decode(t, doc, r.netpols)
		case "networking.k8s.io/v1 Ingress":
			meta = decode(t, doc, r.ingresses)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			meta = decode(t, doc, r.serviceMonitors)
		case "monitoring.coreos.com/v1 PrometheusRule":
			meta = decode(t, doc, r.prometheusRules)
		case "keda.sh/v1alpha1 ScaledObject":
			meta = decode(t, doc, r.scaledObjects)
		default:
			t.Fatalf("rendered %s, which this test cannot check: add it here", key)
		}
		r.kinds[tm.Kind]++
		r.metas = append(r.metas, *meta)
	}
	return r
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// decode decodes doc strictly (unknown or duplicate fields fail) into a
// new T and files it by name.
func decode[T any, PT interface {
	*T
	GetName() string
	GetObjectMeta() metav1.Object
}](t *testing.T, doc string, into map[string]PT) *metav1.ObjectMeta {
	t.Helper()
	obj := PT(new(T))
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		t.Fatalf("%T does not decode strictly: %v\n%s", obj, err, doc)
	}
	if _, dup := into[obj.GetName()]; dup {
		t.Fatalf("two %T named %s", obj, obj.GetName())
	}
	into[obj.GetName()] = obj
	m := obj.GetObjectMeta().(*metav1.ObjectMeta)
	return m
}

func (r *rendered) wantCount(t *testing.T, kind string, n int) {
	t.Helper()
	if r.kinds[kind] != n {
		t.Errorf("%d %s rendered, want %d", r.kinds[kind], kind, n)
	}
}

func (r *rendered) worker(t *testing.T) *appsv1.Deployment {
	t.Helper()
	w := r.deployments[fullname+"-worker"]
	if w == nil {
		t.Fatalf("no worker Deployment %s-worker", fullname)
	}
	return w
}

func (r *rendered) config(t *testing.T) (*config.Config, map[string]string) {
	t.Helper()
	cm := r.configMaps[fullname]
	if cm == nil || cm.Data["pkgfleet.gcfg"] == "" {
		t.Fatalf("no ConfigMap %s with pkgfleet.gcfg", fullname)
	}
	return loadGcfg(t, cm.Data["pkgfleet.gcfg"])
}

func envSecret(c corev1.Container, name string) *corev1.SecretKeySelector {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil {
			return e.ValueFrom.SecretKeyRef
		}
	}
	return nil
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestChartLints(t *testing.T) {
	t.Parallel()
	for _, vs := range chartValueSets() {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"lint", repoPath(chartDir), "--strict", "--namespace", namespace, "--kube-version", kubeVersion}
			if vs.file != "" {
				args = append(args, "-f", repoPath(chartDir, "ci", vs.file))
			}
			run(t, helmEnv(t), helm(t), args...)
		})
	}
}

func TestChartRendersConsistentObjects(t *testing.T) {
	t.Parallel()
	for _, vs := range chartValueSets() {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, vs)
			checkMetadata(t, r)
			checkWorkloads(t, r, vs)
			checkServicesAndSelectors(t, r)
			checkConfig(t, r, vs)
			checkWorkerSandboxSecurity(t, r, vs)
			checkMonitoring(t, r)
			vs.check(t, r)
		})
	}
}

func checkMetadata(t *testing.T, r *rendered) {
	for _, m := range r.metas {
		want := namespace
		switch {
		case r.namespaces[m.Name] != nil && m.Namespace == "":
			want = "" // the node-profiles namespace itself
		case m.Labels["app.kubernetes.io/component"] == "node-profiles":
			want = nodeProfilesNamespace
		}
		if m.Namespace != want {
			t.Errorf("%s: namespace %q, want %q", m.Name, m.Namespace, want)
		}
		if want != "" && !strings.HasPrefix(m.Name, fullname) {
			t.Errorf("%s: name does not start with %s", m.Name, fullname)
		}
		for k, v := range map[string]string{
			"app.kubernetes.io/name": "pkgfleet", "app.kubernetes.io/instance": release,
			"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "pkgfleet",
		} {
			if m.Labels[k] != v {
				t.Errorf("%s: label %s = %q, want %q", m.Name, k, m.Labels[k], v)
			}
		}
	}
}

type workload struct {
	name     string
	selector *metav1.LabelSelector
	pod      corev1.PodTemplateSpec
}

func (r *rendered) workloads() []workload {
	var out []workload
	for n, d := range r.deployments {
		out = append(out, workload{n, d.Spec.Selector, d.Spec.Template})
	}
	for n, s := range r.statefulSets {
		out = append(out, workload{n, s.Spec.Selector, s.Spec.Template})
	}
	return out
}

// selects reports whether sel picks the pods of w.
func selects(t *testing.T, sel *metav1.LabelSelector, w workload) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(w.pod.Labels))
}

func checkWorkloads(t *testing.T, r *rendered, vs valueSet) {
	secretKeys := func(name, key string) {
		t.Helper()
		if slices.Contains(vs.existing, name) {
			return
		}
		s, ok := r.secrets[name]
		if !ok {
			t.Errorf("Secret %s is used but neither rendered nor expected to exist", name)
			return
		}
		if _, ok := s.Data[key]; !ok {
			if _, ok := s.StringData[key]; !ok {
				t.Errorf("Secret %s has no key %s", name, key)
			}
		}
	}
	for _, w := range r.workloads() {
		pod := w.pod.Spec
		if !selects(t, w.selector, w) {
			t.Errorf("%s: selector does not match its own pods", w.name)
		}
		if pod.HostNetwork || pod.HostPID || pod.HostIPC {
			t.Errorf("%s: shares a host namespace", w.name)
		}
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: pod may run as root", w.name)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			volumes[v.Name] = v
			switch {
			case v.ConfigMap != nil:
				if _, ok := r.configMaps[v.ConfigMap.Name]; !ok {
					t.Errorf("%s: volume %s uses ConfigMap %s, which is not rendered", w.name, v.Name, v.ConfigMap.Name)
				}
			case v.Secret != nil:
				secretKeys(v.Secret.SecretName, "")
			case v.PersistentVolumeClaim != nil:
				claim := v.PersistentVolumeClaim.ClaimName
				if pvc, ok := r.pvcs[claim]; ok {
					if !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) {
						t.Errorf("%s: PVC %s shared by API and workers is not ReadWriteMany", w.name, claim)
					}
				} else if !slices.Contains(vs.existing, claim) {
					t.Errorf("%s: PVC %s is neither rendered nor expected to exist", w.name, claim)
				}
			case v.Projected != nil:
				for _, src := range v.Projected.Sources {
					if src.ConfigMap != nil {
						cm, ok := r.configMaps[src.ConfigMap.Name]
						if !ok {
							t.Errorf("%s: projects ConfigMap %s, which is not rendered", w.name, src.ConfigMap.Name)
						}
						for _, it := range src.ConfigMap.Items {
							if ok && cm.Data[it.Key] == "" {
								t.Errorf("%s: ConfigMap %s has no key %s", w.name, src.ConfigMap.Name, it.Key)
							}
						}
					}
					if src.Secret != nil {
						for _, it := range src.Secret.Items {
							secretKeys(src.Secret.Name, it.Key)
						}
					}
				}
			}
		}
		claimTemplates := map[string]bool{}
		if s, ok := r.statefulSets[w.name]; ok {
			for _, c := range s.Spec.VolumeClaimTemplates {
				claimTemplates[c.Name] = true
			}
		}
		for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			where := w.name + "/" + c.Name
			if i := strings.LastIndex(c.Image, ":"); i < 0 || i < strings.LastIndex(c.Image, "/") || strings.HasSuffix(c.Image, ":latest") {
				t.Errorf("%s: image %q has no pinned tag", where, c.Image)
			}
			checkImageHasNoRegistryHost(t, where, c.Image)
			for _, m := range c.VolumeMounts {
				if _, ok := volumes[m.Name]; !ok && !claimTemplates[m.Name] {
					t.Errorf("%s: mounts volume %s, which the pod does not have", where, m.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					secretKeys(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s: no securityContext", where)
			case sc.Privileged != nil && *sc.Privileged:
				t.Errorf("%s: privileged", where)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s: allowPrivilegeEscalation is not false", where)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s: root filesystem is writable", where)
			case sc.Capabilities == nil || len(sc.Capabilities.Add) > 0 || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
				t.Errorf("%s: capabilities %+v, want drop [ALL] and none added", where, sc.Capabilities)
			}
		}
	}
}

// checkImageHasNoRegistryHost: the chart's images name no registry, so the
// cluster's default registry or mirror serves them.
func checkImageHasNoRegistryHost(t *testing.T, where, image string) {
	t.Helper()
	if first, _, ok := strings.Cut(image, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		t.Errorf("%s: image %q names a registry host", where, image)
	}
}

// portNames are the named container ports of a workload.
func portNames(w workload) map[string]int32 {
	out := map[string]int32{}
	for _, c := range w.pod.Spec.Containers {
		for _, p := range c.Ports {
			out[p.Name] = p.ContainerPort
		}
	}
	return out
}

func checkServicesAndSelectors(t *testing.T, r *rendered) {
	one := func(what string, sel *metav1.LabelSelector) (workload, bool) {
		t.Helper()
		var hits []workload
		for _, w := range r.workloads() {
			if selects(t, sel, w) {
				hits = append(hits, w)
			}
		}
		if len(hits) != 1 {
			t.Errorf("%s selects %d workloads, want 1", what, len(hits))
			return workload{}, false
		}
		return hits[0], true
	}
	for name, s := range r.services {
		w, ok := one("Service "+name, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		if !ok {
			continue
		}
		for _, p := range s.Spec.Ports {
			if _, ok := portNames(w)[p.TargetPort.String()]; !ok {
				t.Errorf("Service %s: targetPort %s is not a port of %s", name, p.TargetPort.String(), w.name)
			}
		}
	}
	for name, p := range r.pdbs {
		one("PodDisruptionBudget "+name, p.Spec.Selector)
	}
	for name, np := range r.netpols {
		w, ok := one("NetworkPolicy "+name, &np.Spec.PodSelector)
		if !ok {
			continue
		}
		for _, in := range np.Spec.Ingress {
			for _, p := range in.Ports {
				if _, ok := portNames(w)[p.Port.String()]; !ok {
					t.Errorf("NetworkPolicy %s: port %s is not a port of %s", name, p.Port.String(), w.name)
				}
			}
			for _, from := range in.From {
				if from.PodSelector != nil && from.NamespaceSelector == nil {
					one("NetworkPolicy "+name+" peer", from.PodSelector)
				}
			}
		}
	}
	for name, ing := range r.ingresses {
		for _, rule := range ing.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				b := p.Backend.Service
				s, ok := r.services[b.Name]
				if !ok {
					t.Errorf("Ingress %s routes to Service %s, which is not rendered", name, b.Name)
					continue
				}
				if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == b.Port.Name }) {
					t.Errorf("Ingress %s routes to port %q, which Service %s lacks", name, b.Port.Name, b.Name)
				}
			}
		}
	}
	for name, sm := range r.serviceMonitors {
		var hits []*corev1.Service
		for _, s := range r.services {
			sel, _ := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
			if sel.Matches(labels.Set(s.Labels)) {
				hits = append(hits, s)
			}
		}
		if len(hits) != 1 {
			t.Errorf("ServiceMonitor %s selects %d Services, want 1", name, len(hits))
			continue
		}
		for _, e := range sm.Spec.Endpoints {
			if !slices.ContainsFunc(hits[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
				t.Errorf("ServiceMonitor %s: port %s is not a port of Service %s", name, e.Port, hits[0].Name)
			}
			if e.Path != "/metrics" {
				t.Errorf("ServiceMonitor %s scrapes %s", name, e.Path)
			}
		}
		if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{namespace}) {
			t.Errorf("ServiceMonitor %s looks in %v", name, sm.Spec.NamespaceSelector.MatchNames)
		}
	}
}

func container(t *testing.T, d *appsv1.Deployment, name string) corev1.Container {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("%s has no container %s", d.Name, name)
	return corev1.Container{}
}

// mountOf returns the volume mounted at path in c, or nil.
func mountOf(pod corev1.PodSpec, c corev1.Container, path string) *corev1.Volume {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == m.Name {
					return &pod.Volumes[i]
				}
			}
		}
	}
	return nil
}

func listenPort(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return int32(n)
}

// checkConfig loads the rendered pkgfleet.gcfg as the binaries would and
// checks that its paths and ports are what the pods provide.
func checkConfig(t *testing.T, r *rendered, vs valueSet) {
	cfg, raw := r.config(t)
	api, worker := r.deployments[fullname+"-api"], r.worker(t)
	apiC, workerC := container(t, api, "api"), container(t, worker, "worker")
	if cfg.Worker.Concurrency != vs.concurrency {
		t.Errorf("Worker.Concurrency = %d, want %d", cfg.Worker.Concurrency, vs.concurrency)
	}
	if cfg.Worker.ShutdownGrace != vs.grace {
		t.Errorf("Worker.ShutdownGrace = %s, want %s", cfg.Worker.ShutdownGrace, vs.grace)
	}
	if p := listenPort(t, cfg.HTTP.Listen); p != portNames(workload{pod: api.Spec.Template})["http"] {
		t.Errorf("HTTP.Listen %s is not the API's http port", cfg.HTTP.Listen)
	}
	if p := listenPort(t, raw["Worker.MetricsListen"]); p != portNames(workload{pod: worker.Spec.Template})["metrics"] {
		t.Errorf("Worker.MetricsListen %q is not the worker's metrics port", raw["Worker.MetricsListen"])
	}
	if cfg.HTTP.TokensFile != configDir+"/tokens" {
		t.Errorf("HTTP.TokensFile = %s", cfg.HTTP.TokensFile)
	}
	s3 := raw["Storage.Default"] == "s3"
	if s3 && raw["FileStorage.Location"] != "" {
		t.Errorf("Storage.Default = s3 and FileStorage.Location %s both set", raw["FileStorage.Location"])
	}
	for _, d := range []*appsv1.Deployment{api, worker} {
		c := d.Spec.Template.Spec.Containers[0]
		pod := d.Spec.Template.Spec
		if got := envValue(c, "PKGFLEET_CONFIG"); got != configDir+"/pkgfleet.gcfg" {
			t.Errorf("%s: PKGFLEET_CONFIG = %q", d.Name, got)
		}
		cv := mountOf(pod, c, configDir)
		if cv == nil || cv.Projected == nil {
			t.Fatalf("%s: %s is not the projected config volume", d.Name, configDir)
		}
		paths := map[string]bool{}
		for _, src := range cv.Projected.Sources {
			if src.ConfigMap != nil {
				for _, it := range src.ConfigMap.Items {
					paths[it.Path] = true
				}
			}
			if src.Secret != nil {
				for _, it := range src.Secret.Items {
					paths[it.Path] = true
				}
			}
		}
		if !paths["pkgfleet.gcfg"] {
			t.Errorf("%s: no pkgfleet.gcfg in %s", d.Name, configDir)
		}
		if cfg.Git.CredentialKeyFile != "" && !paths[strings.TrimPrefix(cfg.Git.CredentialKeyFile, configDir+"/")] {
			t.Errorf("%s: Git.CredentialKeyFile %s is not in its config volume", d.Name, cfg.Git.CredentialKeyFile)
		}
		if d == api && !paths["tokens"] {
			t.Errorf("API: HTTP.TokensFile is not in its config volume")
		}
		if s3 {
			checkS3Pod(t, r, d, raw)
		} else if v := mountOf(pod, c, cfg.FileStorage.Location); v == nil || v.PersistentVolumeClaim == nil {
			t.Errorf("%s: FileStorage.Location %s is not the shared artifact PVC", d.Name, cfg.FileStorage.Location)
		}
		for _, dir := range []string{cfg.Server.DataDir, cfg.Server.TempDir, cfg.Server.SockFileDir} {
			if v := mountOf(pod, c, dir); v == nil || v.EmptyDir == nil {
				t.Errorf("%s: %s is not a writable emptyDir (the root filesystem is read-only)", d.Name, dir)
			}
		}
	}
	// API and workers share one artifact volume.
	a := mountOf(api.Spec.Template.Spec, apiC, cfg.FileStorage.Location)
	w := mountOf(worker.Spec.Template.Spec, workerC, cfg.FileStorage.Location)
	if a != nil && w != nil && a.PersistentVolumeClaim != nil && w.PersistentVolumeClaim != nil &&
		a.PersistentVolumeClaim.ClaimName != w.PersistentVolumeClaim.ClaimName {
		t.Errorf("API and workers mount different artifact claims")
	}
	if !strings.HasPrefix(cfg.Git.BuilderDir, cfg.Server.DataDir+"/") {
		t.Errorf("Git.BuilderDir %s is outside the data emptyDir", cfg.Git.BuilderDir)
	}
}

// checkWorkerSandboxSecurity asserts what user namespaces need from the
// pod, and nothing more.
func checkWorkerSandboxSecurity(t *testing.T, r *rendered, vs valueSet) {
	w := r.worker(t)
	pod := w.Spec.Template.Spec
	psc := pod.SecurityContext
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 10001 {
		t.Errorf("worker pod: runAsNonRoot %v, runAsUser %v; want true, 10001 (the images' pkgfleet user)", psc.RunAsNonRoot, psc.RunAsUser)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != vs.seccomp {
		t.Errorf("worker pod: seccompProfile %+v, want %s", psc.SeccompProfile, vs.seccomp)
	}
	if psc.AppArmorProfile == nil || psc.AppArmorProfile.Type != vs.apparmor {
		t.Errorf("worker pod: appArmorProfile %+v, want %s", psc.AppArmorProfile, vs.apparmor)
	}
	c := container(t, w, "worker")
	sc := c.SecurityContext
	if sc.RunAsUser == nil || *sc.RunAsUser != 10001 || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("worker container: runAsUser %v runAsNonRoot %v", sc.RunAsUser, sc.RunAsNonRoot)
	}
	if sc.SeccompProfile != nil && sc.SeccompProfile.Type != vs.seccomp {
		t.Errorf("worker container overrides seccomp with %+v", sc.SeccompProfile)
	}
	if sc.AppArmorProfile != nil && sc.AppArmorProfile.Type != vs.apparmor {
		t.Errorf("worker container overrides AppArmor with %+v", sc.AppArmorProfile)
	}
	// checkWorkloads already demands: not privileged, no escalation, drop
	// ALL, nothing added, read-only root.
	want := int64(vs.grace/time.Second) + vs.margin
	if got := pod.TerminationGracePeriodSeconds; got == nil || *got != want {
		t.Errorf("worker terminationGracePeriodSeconds = %s, want Worker.ShutdownGrace %s + %ds = %d",
			ptrString(got), vs.grace, vs.margin, want)
	}
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("worker probes must use the metrics listener: %+v", p)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("worker readiness probe path %s", c.ReadinessProbe.HTTPGet.Path)
	}
}

func checkMonitoring(t *testing.T, r *rendered) {
	if len(r.prometheusRules) > 0 {
		want := loadRules(t, readRepoFile(t, rulesFile))
		for name, pr := range r.prometheusRules {
			if !reflect.DeepEqual(pr.Spec, want) {
				t.Errorf("PrometheusRule %s differs from %s", name, rulesFile)
			}
		}
	}
	if cm, ok := r.configMaps[fullname+"-dashboard"]; ok {
		if cm.Labels["grafana_dashboard"] != "1" {
			t.Errorf("dashboard ConfigMap lacks the grafana sidecar label")
		}
		var got, want any
		if err := json.Unmarshal([]byte(cm.Data["pkgfleet-dashboard.json"]), &got); err != nil {
			t.Errorf("dashboard ConfigMap: %v", err)
		}
		_ = json.Unmarshal(readRepoFile(t, "deploy", "grafana", "pkgfleet-dashboard.json"), &want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("dashboard ConfigMap differs from deploy/grafana/pkgfleet-dashboard.json")
		}
	}
}

func TestChartSchemaRejectsMistakes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ set, want string }{
		{"worker.concurency=3", "concurency"},
		{"config.Git.BuildConcurency=3", "BuildConcurency"},
		{"config.Server.DataDir=/x", "DataDir"},
		{"config.Redis.Address=x:1", "Redis"},
		{"worker.seccompProfile.type=RuntimeDefault", "seccompProfile"},
		{"api.tokens.lines[0]=ci-bot write deadbeef", "lines"},
		{"redis.external.enabled=true", "redis.external"},
		{"api.tokens.generateAdminToken=false", "tokens"},
		{"storage.type=s3", "storage.s3.bucket"},
		{"storage.type=gcs", "/storage/type"},
		{"storage.s3.endpoint=s3.example.com", "endpoint"},
		{"config.S3Storage.Bucket=b", "S3Storage"},
		{"config.Redis.SentinelAddresses=s:26379", "Redis"},
		{"redis.mode=cluster", "/redis/mode"},
		{"redis.sentinel.replicas=2", "/redis/sentinel/replicas"},
		{"redis.mode=sentinel,redis.sentinel.quorum=4", "redis.sentinel.quorum"},
		{"redis.mode=sentinel,redis.sentinel.minReplicasToWrite=3", "redis.sentinel.minReplicasToWrite"},
		{"redis.external.sentinelAddresses[0]=no-port", "sentinelAddresses"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			t.Parallel()
			out, err := helmTemplate(t, "--set", tc.set)
			if err == nil {
				t.Fatalf("helm template --set %s succeeded; want it refused", tc.set)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("refusal does not name %q: %v\n%s", tc.want, err, out)
			}
		})
	}
}

// An index URL with credentials never lands in the ConfigMap: the chart
// refuses it in values.config, names the Secret way, and does not repeat
// the URL; one without credentials is an ordinary setting.
func TestChartKeepsIndexCredentialsOutOfTheConfigMap(t *testing.T) {
	t.Parallel()
	const password = "s3cret-pw"
	for _, tc := range []struct {
		name string
		args []string
		want []string // all in the refusal; nil: renders
	}{
		{"python credentials", []string{"--set-string", "config.Git.PythonIndexURL=https://fleet:" + password + "@idx.example/simple/"},
			[]string{"config.Git.PythonIndexURL", "worker.indexSecret.name", "worker.indexSecret.pythonIndexURLKey", "PKGFLEET_GIT_PYTHONINDEXURL"}},
		{"r token", []string{"--set-string", "config.Git.RRepositoryURL=http://" + password + "@cran.example/"},
			[]string{"config.Git.RRepositoryURL", "worker.indexSecret.name", "worker.indexSecret.rRepositoryURLKey", "PKGFLEET_GIT_RREPOSITORYURL"}},
		{"both ways", []string{"--set-string", "config.Git.PythonIndexURL=https://idx.example/simple/", "--set", "worker.indexSecret.name=pkgfleet-index"},
			[]string{"config.Git.PythonIndexURL", "worker.indexSecret", "keep one"}},
		{"no key", []string{"--set", "worker.indexSecret.name=pkgfleet-index", "--set", "worker.indexSecret.pythonIndexURLKey=", "--set", "worker.indexSecret.rRepositoryURLKey="},
			[]string{"worker.indexSecret.pythonIndexURLKey", "worker.indexSecret.rRepositoryURLKey"}},
		{"no credentials", []string{"--set-string", "config.Git.PythonIndexURL=https://idx.example/simple/"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := helmTemplate(t, tc.args...)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("helm template %v: %v", tc.args, err)
				}
				if !strings.Contains(string(out), "PythonIndexURL = \"https://idx.example/simple/\"") {
					t.Errorf("a credential-free index URL did not reach the config:\n%s", out)
				}
				return
			}
			if err == nil {
				t.Fatalf("helm template %v succeeded; want it refused", tc.args)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal does not name %s: %v", w, err)
				}
			}
			if strings.Contains(err.Error()+string(out), password) {
				t.Errorf("the refusal repeats the credentials: %v\n%s", err, out)
			}
		})
	}
}

// chartManaged are the settings the chart writes itself; values.config
// cannot set them, and the schema lists every other setting.
var chartManaged = []string{
	"Server.DataDir", "Server.TempDir", "Server.SockFileDir", "Git.CredentialKeyFile",
	"Worker.Concurrency", "Worker.ShutdownGrace", "Worker.MetricsListen",
	"Redis.Address", "Redis.URL", "Redis.Password", "Redis.DB",
	"Redis.SentinelAddresses", "Redis.SentinelMaster", "Redis.SentinelPassword",
	"HTTP.Listen", "HTTP.TokensFile", "FileStorage.Location",
	"Storage.Default", "S3Storage.Bucket", "S3Storage.Region", "S3Storage.Prefix", "S3Storage.Endpoint", "S3Storage.EnablePathStyle",
}

type schemaNode struct {
	Type                 any                    `json:"type"`
	Properties           map[string]*schemaNode `json:"properties"`
	AdditionalProperties any                    `json:"additionalProperties"`
}

var update = flag.Bool("update", false, "rewrite generated files: the config part of charts/pkgfleet/values.schema.json, deploy/profiles/pkgfleet-worker.json")

// configSchema is the schema of values.config: one closed object per
// section, one property per setting the chart does not set itself, with
// the setting's doc string.
func configSchema() map[string]any {
	sections := map[string]any{}
	for _, st := range config.Settings() {
		if slices.Contains(chartManaged, st.Name()) {
			continue
		}
		sec, ok := sections[st.Section].(map[string]any)
		if !ok {
			sec = map[string]any{"type": "object", "additionalProperties": false, "properties": map[string]any{}}
			sections[st.Section] = sec
		}
		sec["properties"].(map[string]any)[st.Key] = map[string]any{
			"type":        []any{"string", "integer", "boolean"},
			"description": st.Doc,
		}
	}
	return map[string]any{
		"type":                 "object",
		"additionalProperties": false,
		"description":          "Extra pkgfleet settings by [Section] and Key (pkgfleet-api -help); the keys the chart sets itself are not allowed. Generated: go test ./deploy -run TestChartSchemaConfigListsEverySetting -update",
		"properties":           sections,
	}
}

// values.config accepts exactly the settings of internal/config that the
// chart does not set itself; -update rewrites it after a setting changes.
func TestChartSchemaConfigListsEverySetting(t *testing.T) {
	path := repoPath(chartDir, "values.schema.json")
	data := readRepoFile(t, chartDir, "values.schema.json")
	var schema map[string]any
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatal(err)
	}
	props := schema["properties"].(map[string]any)
	want := configSchema()
	if *update {
		props["config"] = want
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(schema); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, _ := json.Marshal(props["config"])
	wantJSON, _ := json.Marshal(want)
	if string(got) != string(wantJSON) {
		t.Errorf("values.schema.json's config does not list exactly the settings of internal/config that the chart leaves to values (settings changed?); run:\n  go test ./deploy -run TestChartSchemaConfigListsEverySetting -update")
	}
	// The chart-managed settings must exist, or the chart writes a key
	// pkgfleet refuses.
	for _, name := range chartManaged {
		if !declared(name) {
			t.Errorf("the chart sets %s, which internal/config does not declare", name)
		}
	}
}

// Every section values.config accepts reaches pkgfleet.gcfg: the template
// names no list of sections that a new one could be missing from.
func TestChartConfigRendersEverySectionItAccepts(t *testing.T) {
	t.Parallel()
	want, tried := map[string]string{}, map[string]bool{}
	var args []string
	for _, st := range config.Settings() {
		name := st.Name()
		// --set-string splits at commas; one setting per section will do.
		if slices.Contains(chartManaged, name) || st.Default == "" || strings.ContainsAny(st.Default, `,\=`) {
			continue
		}
		if tried[st.Section] {
			continue
		}
		tried[st.Section], want[name] = true, st.Default
		args = append(args, "--set-string", "config."+name+"="+st.Default)
	}
	out, err := helmTemplate(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	_, got := parseRendered(t, out).config(t)
	for name, v := range want {
		if got[name] != v {
			t.Errorf("values.config.%s = %q renders as %q in pkgfleet.gcfg", name, v, got[name])
		}
	}
	if !tried["Reconcile"] || len(want) < 5 {
		t.Errorf("sections tried: %v; want Reconcile, which the chart does not set itself, among them", want)
	}
}

// The schema rejects typos only where additionalProperties is false.
func TestChartSchemaClosesEveryObject(t *testing.T) {
	t.Parallel()
	var s schemaNode
	if err := json.Unmarshal(readRepoFile(t, chartDir, "values.schema.json"), &s); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, n *schemaNode)
	walk = func(path string, n *schemaNode) {
		if len(n.Properties) > 0 && n.AdditionalProperties != false {
			t.Errorf("schema object %s accepts unknown keys", path)
		}
		for k, c := range n.Properties {
			walk(path+"."+k, c)
		}
	}
	walk("values", &s)
}

var valuesKey = regexp.MustCompile(`^(\s*)([A-Za-z][A-Za-z0-9_]*):`)

// Every key of values.yaml has a comment right above it, except inside
// free-form maps (resources, labels) whose keys are Kubernetes'.
func TestChartValuesEveryKeyCommented(t *testing.T) {
	t.Parallel()
	lines := strings.Split(string(readRepoFile(t, chartDir, "values.yaml")), "\n")
	var stack []struct {
		indent int
		key    string
	}
	for i, line := range lines {
		m := valuesKey.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		indent := len(m[1])
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		free := false
		for _, s := range stack {
			if s.key == "resources" || s.key == "labels" {
				free = true
			}
		}
		stack = append(stack, struct {
			indent int
			key    string
		}{indent, m[2]})
		if free {
			continue
		}
		if i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
			t.Errorf("values.yaml:%d: key %s has no comment above it", i+1, m[2])
		}
	}
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// NOTES.txt renders for every value set. helm template leaves NOTES out,
// so a copy of the chart renders it into a ConfigMap.
func TestChartNotesRender(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pkgfleet")
	if err := os.CopyFS(dir, os.DirFS(repoPath(chartDir))); err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(dir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "templates", "NOTES.txt")); err != nil {
		t.Fatal(err)
	}
	wrapper := "{{- define \"test.notes\" -}}\n" + string(notes) + "\n{{- end }}\n" +
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n{{ include \"test.notes\" . | indent 4 }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "zz-notes.yaml"), []byte(wrapper), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, vs := range chartValueSets() {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"template", release, dir, "--namespace", namespace, "--kube-version", kubeVersion, "--show-only", "templates/zz-notes.yaml"}
			if vs.file != "" {
				args = append(args, "-f", repoPath(chartDir, "ci", vs.file))
			}
			out := run(t, helmEnv(t), helm(t), args...)
			var cm corev1.ConfigMap
			if err := yaml.UnmarshalStrict(out, &cm); err != nil {
				t.Fatalf("rendered NOTES: %v\n%s", err, out)
			}
			text := cm.Data["notes"]
			for _, want := range []string{"pkgfleet-worker sandbox check", "sandbox tier: ", "reason=FailedCreate", "the worker pods need level ", "port-forward svc/" + fullname + "-api", "max_user_namespaces ≥ " + strconv.Itoa(2*vs.concurrency)} {
				if !strings.Contains(text, want) {
					t.Errorf("NOTES lack %q:\n%s", want, text)
				}
			}
			if strings.Contains(text, "<no value>") {
				t.Errorf("NOTES print <no value>:\n%s", text)
			}
		})
	}
}
