package deploy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// The Pod Security levels, most permissive first.
var podSecurityLevels = []string{"privileged", "baseline", "restricted"}

// An admissionRow is one row of the chart README's Pod Security table: a
// way to install the chart, the worker's sandbox tier with it, and what a
// namespace enforcing each level does with its worker pod.
type admissionRow struct {
	values string   // the first cell, as written
	args   []string // helm arguments: -f charts/pkgfleet/ci/..., --set ...
	tier   string   // "masked-proc" or "full"
	// cells are "admitted" or "refused (what, …)", one per level; each
	// word in the parentheses is in the apiserver's reason.
	cells map[string]string
}

const (
	tableBegin = "<!-- pod-security:begin"
	tableEnd   = "<!-- pod-security:end -->"
)

// podSecurityTable returns the table block of a doc, markers included.
func podSecurityTable(t *testing.T, parts ...string) string {
	t.Helper()
	doc := string(readRepoFile(t, parts...))
	i, j := strings.Index(doc, tableBegin), strings.Index(doc, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no %s … %s block", filepath.Join(parts...), tableBegin, tableEnd)
	}
	return doc[i : j+len(tableEnd)]
}

var backticked = regexp.MustCompile("`([^`]*)`")

// admissionTable parses the Pod Security table of the chart README, which
// docs/sandbox.md repeats word for word.
func admissionTable(t *testing.T) []admissionRow {
	t.Helper()
	block := podSecurityTable(t, chartDir, "README.md")
	if other := podSecurityTable(t, "docs", "sandbox.md"); other != block {
		t.Errorf("the Pod Security table of docs/sandbox.md differs from charts/pkgfleet/README.md's; copy the chart README's")
	}
	var rows []admissionRow
	for _, line := range strings.Split(block, "\n") {
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| values ") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) != 6 {
			t.Fatalf("Pod Security table row has %d cells, want 6 (values, tier, 3 levels, gives up): %s", len(cells), line)
		}
		row := admissionRow{values: cells[0], tier: strings.Trim(cells[1], "`"), cells: map[string]string{}}
		if row.values != "defaults" {
			m := backticked.FindAllStringSubmatch(row.values, -1)
			if len(m) == 0 {
				t.Fatalf("Pod Security table: values cell %q is neither defaults nor `helm arguments`", row.values)
			}
			for _, a := range m {
				row.args = append(row.args, strings.Fields(a[1])...)
			}
			for i, a := range row.args {
				if strings.HasPrefix(a, "ci/") {
					row.args[i] = repoPath(chartDir, a)
				}
			}
		}
		for i, level := range podSecurityLevels {
			row.cells[level] = cells[2+i]
		}
		rows = append(rows, row)
	}
	return rows
}

// The README's table names every value set under ci/, so each is tried
// against the apiserver.
func TestChartPodSecurityTableCoversEveryValueSet(t *testing.T) {
	t.Parallel()
	rows := admissionTable(t)
	files, err := filepath.Glob(repoPath(chartDir, "ci", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !slices.ContainsFunc(rows, func(r admissionRow) bool { return slices.Contains(r.args, f) }) {
			t.Errorf("the Pod Security table of charts/pkgfleet/README.md has no row for ci/%s", filepath.Base(f))
		}
	}
	if !slices.ContainsFunc(rows, func(r admissionRow) bool { return r.values == "defaults" }) {
		t.Errorf("the Pod Security table has no row for the defaults")
	}
}

// The chart against a real kube-apiserver (with etcd), at each Pod
// Security level: every rendered object is created with a server-side dry
// run and strict field validation, and each workload's pod template is
// created as a Pod, since Pod Security enforces on Pods only. The worker
// pod's fate at each level is the README's table; the API and Redis pods
// pass every level. Then helm install --dry-run=server, where the chart
// looks the namespace's level up, must refuse exactly where the table
// says the worker is refused, naming the level it needs and the ways out.
func TestChartAdmissionAgainstKubeAPIServer(t *testing.T) {
	rows := admissionTable(t)
	k := startKubeAPIServer(t)
	for _, level := range podSecurityLevels {
		k.namespace(t, "psa-"+level, level)
	}
	k.namespace(t, nodeProfilesNamespace, "privileged")
	k.standInCRDs(t)

	for _, row := range rows {
		t.Run(row.values, func(t *testing.T) {
			if slices.Contains(row.args, repoPath(chartDir, "ci", "node-profiles-values.yaml")) && !chartHasProfiles() {
				t.Skip("the chart ships no profiles yet (TestChartNodeProfilesRefuseWithoutProfiles)")
			}
			need := ""
			for _, level := range podSecurityLevels {
				if row.cells[level] == "admitted" {
					need = level
				}
			}
			for _, level := range podSecurityLevels {
				t.Run(level, func(t *testing.T) {
					t.Parallel()
					k.checkAdmission(t, row, level)
					k.checkInstall(t, row, level, need)
				})
			}
		})
	}
}

// checkAdmission submits one row's objects and pods into the namespace of
// one level.
func (k *kubeAPIServer) checkAdmission(t *testing.T, row admissionRow, level string) {
	ns := "psa-" + level
	out, err := runErr(helmEnv(t), helm(t), append([]string{"template", release, repoPath(chartDir),
		"--namespace", ns, "--kube-version", strings.TrimPrefix(k.version, "v")}, row.args...)...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	var objects, namespaces []string
	var pods []*corev1.Pod
	var worker *corev1.Pod
	// The ServiceAccounts the release makes: a dry run creates none, and a
	// pod naming one would be refused for its absence, which is not what
	// this test asks (Pod Security does not look at it).
	ownAccounts := map[string]bool{}
	for _, doc := range docSeparator.Split(string(out), -1) {
		var o struct {
			metav1.TypeMeta   `json:",inline"`
			metav1.ObjectMeta `json:"metadata"`
		}
		if yaml.Unmarshal([]byte(doc), &o) == nil && o.Kind == "ServiceAccount" {
			ownAccounts[o.Name] = true
		}
	}
	for _, doc := range docSeparator.Split(string(out), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatal(err)
		}
		if tm.Kind == "Namespace" {
			// It exists already (the test made it): apply, not create.
			namespaces = append(namespaces, doc)
			continue
		}
		objects = append(objects, doc)
		var spec *corev1.PodTemplateSpec
		var meta metav1.ObjectMeta
		switch tm.Kind {
		case "Deployment", "StatefulSet", "DaemonSet":
			var w struct {
				metav1.ObjectMeta `json:"metadata"`
				Spec              struct {
					Template             corev1.PodTemplateSpec         `json:"template"`
					VolumeClaimTemplates []corev1.PersistentVolumeClaim `json:"volumeClaimTemplates"`
				} `json:"spec"`
			}
			if err := yaml.Unmarshal([]byte(doc), &w); err != nil {
				t.Fatal(err)
			}
			spec, meta = &w.Spec.Template, w.ObjectMeta
			// A StatefulSet's pod gets its claims as the controller names them.
			for _, c := range w.Spec.VolumeClaimTemplates {
				spec.Spec.Volumes = append(spec.Spec.Volumes, corev1.Volume{Name: c.Name, VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name + "-" + meta.Name + "-0"}}})
			}
		default:
			continue
		}
		pod := &corev1.Pod{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: meta.Name, Namespace: meta.Namespace,
				Labels: spec.Labels, Annotations: spec.Annotations},
			Spec: spec.Spec,
		}
		if ownAccounts[pod.Spec.ServiceAccountName] {
			pod.Spec.ServiceAccountName = ""
		}
		pods = append(pods, pod)
		if meta.Name == fullname+"-worker" {
			worker = pod
			checkTier(t, row, tm.Kind, pod)
		}
		b, err := yaml.Marshal(pod)
		if err != nil {
			t.Fatal(err)
		}
		objects = append(objects, string(b))
	}
	if worker == nil {
		t.Fatalf("no worker Deployment rendered")
	}

	if len(namespaces) > 0 {
		k.kubectl(t, []byte(strings.Join(namespaces, "\n---\n")), "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-")
	}
	stdout, stderr, _ := k.kubectlErr([]byte(strings.Join(objects, "\n---\n")),
		"create", "--dry-run=server", "--validate=strict", "-o", "name", "-f", "-")
	created := map[string]bool{}
	for _, l := range strings.Fields(stdout) {
		created[l] = true
	}
	// Every object but the pods is admitted at every level: Pod Security
	// only warns about a Deployment whose pods it will refuse.
	for _, doc := range objects {
		var o struct {
			metav1.TypeMeta   `json:",inline"`
			metav1.ObjectMeta `json:"metadata"`
		}
		_ = yaml.Unmarshal([]byte(doc), &o)
		if o.Kind == "Pod" {
			continue
		}
		if !created[kubectlName(o.APIVersion, o.Kind, o.Name)] {
			t.Errorf("%s %s refused by the apiserver:\n%s", o.Kind, o.Name, stderr)
		}
	}
	for _, pod := range pods {
		admitted := created["pod/"+pod.Name]
		reason := refusal(stderr, pod.Name)
		if pod != worker {
			if !admitted {
				t.Errorf("pod of %s refused in namespace %s: %s", pod.Name, pod.Namespace, reason)
			}
			continue
		}
		want := row.cells[level]
		switch {
		case want == "admitted" && !admitted:
			t.Errorf("worker pod refused at %s, table says admitted: %s", level, reason)
		case want == "admitted":
		case !strings.HasPrefix(want, "refused ("):
			t.Errorf("table cell %q: want admitted or refused (reasons)", want)
		case admitted:
			t.Errorf("worker pod admitted at %s, table says %s", level, want)
		default:
			for _, w := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(want, "refused ("), ")"), ",") {
				if w = strings.TrimSpace(w); !strings.Contains(strings.ToLower(reason), strings.ToLower(w)) {
					t.Errorf("worker pod refused at %s, but the reason does not name %q: %s", level, w, reason)
				}
			}
		}
		if !admitted && !strings.Contains(stderr, "Warning: would violate PodSecurity") {
			t.Errorf("no Pod Security warning for the Deployment whose pods are refused:\n%s", stderr)
		}
	}
}

// checkTier: the table's tier is what the worker pod's settings give.
func checkTier(t *testing.T, row admissionRow, kind string, pod *corev1.Pod) {
	full := pod.Spec.HostUsers != nil && !*pod.Spec.HostUsers
	for _, c := range pod.Spec.Containers {
		full = full && c.SecurityContext != nil && c.SecurityContext.ProcMount != nil && *c.SecurityContext.ProcMount == corev1.UnmaskedProcMount
	}
	want := "masked-proc"
	if full {
		want = "full"
	}
	if row.tier != want {
		t.Errorf("%s %s: table says tier %q; hostUsers and procMount give %q", kind, pod.Name, row.tier, want)
	}
}

// checkInstall runs helm install --dry-run=server into the namespace of one
// level: the chart looks the level up and refuses iff the worker would be.
func (k *kubeAPIServer) checkInstall(t *testing.T, row admissionRow, level, need string) {
	ns := "psa-" + level
	args := append([]string{"install", release, repoPath(chartDir), "--namespace", ns, "--dry-run=server"}, row.args...)
	// helm install will not take over a namespace it did not create, and
	// checkAdmission needed the node-profiles one: name another.
	args = append(args, "--set", "nodeProfiles.namespace="+nodeProfilesNamespace+"-"+level)
	_, err := runErr(append(helmEnv(t), "KUBECONFIG="+k.kubeconfig), helm(t), args...)
	if row.cells[level] == "admitted" {
		if err != nil {
			t.Errorf("helm install --dry-run=server into a %s namespace: %v", level, err)
		}
		return
	}
	if err == nil {
		t.Fatalf("helm install --dry-run=server into a %s namespace succeeded; the worker pods would be refused", level)
	}
	for _, want := range []string{
		fmt.Sprintf("namespace %s enforces Pod Security %q", ns, level),
		fmt.Sprintf("need %q", need),
		"kubectl label namespace " + ns + " pod-security.kubernetes.io/enforce=" + need,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("helm install's refusal lacks %q: %v", want, err)
		}
	}
	other := "ci/restricted-values.yaml"
	if need == "baseline" {
		other = "worker.userNamespacedPod=false"
	}
	if !strings.Contains(err.Error(), other) {
		t.Errorf("helm install's refusal does not name the other way out (%s): %v", other, err)
	}
}

// kubectlName is the name kubectl -o name prints for an object.
func kubectlName(apiVersion, kind, name string) string {
	group := ""
	if i := strings.Index(apiVersion, "/"); i >= 0 {
		group = "." + apiVersion[:i]
	}
	return strings.ToLower(kind) + group + "/" + name
}

// refusal is kubectl's error line for the pod name, or "".
func refusal(stderr, name string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, fmt.Sprintf("pods %q is forbidden", name)) {
			return l
		}
	}
	return ""
}

// kubeAPIServer is an etcd and a kube-apiserver on loopback, with a
// kubeconfig for kubectl and helm.
type kubeAPIServer struct {
	kubectlBin string
	kubeconfig string
	version    string
}

// toolModuleVersion is the version of module that the tool module in
// deploy/tools/<dir> requires: the one pin scripts/deploy-deps.sh builds
// (read the same way there; go mod tidy marks a tool's module indirect).
func toolModuleVersion(t *testing.T, dir, module string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^(?:require)?\s*` + regexp.QuoteMeta(module) + ` (v\S+)(?: // indirect)?$`).FindSubmatch(readRepoFile(t, "deploy", "tools", dir, "go.mod"))
	if m == nil {
		t.Fatalf("deploy/tools/%s/go.mod requires no %s", dir, module)
	}
	return string(m[1])
}

// cachedTool is a binary scripts/deploy-deps.sh built into the cache.
func cachedTool(t *testing.T, name, version string) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(cache, "pkgfleet", "tools", name+"-"+version, name)
	if _, err := os.Stat(bin); err != nil {
		missingTool(t, "%s %s is not built: run scripts/deploy-deps.sh (builds it once, about ten minutes)", name, version)
	}
	return bin
}

// startProcess runs a server until the test ends; its output goes to a
// log file that a failing test prints the end of. The channel closes when
// the server exits.
func startProcess(t *testing.T, dir, name string, args ...string) <-chan struct{} {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, filepath.Base(name)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		log.Close()
		if t.Failed() {
			data, _ := os.ReadFile(log.Name())
			if len(data) > 4000 {
				data = data[len(data)-4000:]
			}
			t.Logf("end of %s's log:\n%s", filepath.Base(name), data)
		}
	})
	return exited
}

func startKubeAPIServer(t *testing.T) *kubeAPIServer {
	t.Helper()
	kubeVer := toolModuleVersion(t, "kube", "k8s.io/kubernetes")
	etcdVer := toolModuleVersion(t, "etcd", "go.etcd.io/etcd/server/v3")
	apiserverBin := cachedTool(t, "kube-apiserver", kubeVer)
	k := &kubeAPIServer{kubectlBin: cachedTool(t, "kubectl", kubeVer), version: kubeVer}
	etcdBin := cachedTool(t, "etcd", etcdVer)
	helm(t) // before the servers: building it may take minutes
	dir := t.TempDir()

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	startProcess(t, dir, etcdBin, "--name=test", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=test="+peerURL, "--unsafe-no-fsync", "--log-level=warn")

	// The service-account signing key, and a token of system:masters for
	// the test's kubectl and helm (a file in the test's temp dir, never
	// logged).
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	saKey := filepath.Join(dir, "sa.key")
	if err := os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	token := hex.EncodeToString(secret)
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",pkgfleet-test,pkgfleet-test,system:masters\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	port := testenv.FreePort(t)
	certDir := filepath.Join(dir, "certs")
	apiserverExited := startProcess(t, dir, apiserverBin,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(port),
		"--cert-dir="+certDir, // a self-signed serving certificate for 127.0.0.1
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+saKey, "--service-account-signing-key-file="+saKey,
		// A setting the apiserver requires; no traffic goes there.
		"--service-cluster-ip-range=10.96.0.0/24",
		"--token-auth-file="+tokens, "--authorization-mode=RBAC",
		// As kubeadm and managed clusters run it: privileged pods exist
		// (the node-profiles installer), Pod Security decides where.
		"--allow-privileged=true",
		// Only 127.0.0.1 to advertise, which the endpoint reconciler refuses.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false", "--profiling=false")

	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	caFile := filepath.Join(certDir, "apiserver.crt")
	testenv.Eventually(t, 3*time.Minute, "kube-apiserver ready", func() bool {
		select {
		case <-apiserverExited:
			t.Fatalf("kube-apiserver exited")
		default:
		}
		ca, err := os.ReadFile(caFile)
		if err != nil {
			return false
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		req, _ := http.NewRequest("GET", server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	k.kubeconfig = filepath.Join(dir, "kubeconfig")
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: test
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: test}
current-context: test
`, server, caFile, token)
	if err := os.WriteFile(k.kubeconfig, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	var v struct {
		ServerVersion struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal(k.kubectl(t, nil, "version", "-o", "json"), &v); err != nil || v.ServerVersion.GitVersion != kubeVer {
		t.Fatalf("the apiserver reports version %q (%v), want %s", v.ServerVersion.GitVersion, err, kubeVer)
	}
	return k
}

func (k *kubeAPIServer) kubectlErr(stdin []byte, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(k.kubectlBin, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func (k *kubeAPIServer) kubectl(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	out, stderr, err := k.kubectlErr(stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, stderr, out)
	}
	return []byte(out)
}

// namespace creates a namespace that enforces a Pod Security level, with
// the default ServiceAccount that kube-controller-manager (not running
// here) would add and Pod admission looks up.
func (k *kubeAPIServer) namespace(t *testing.T, name, level string) {
	t.Helper()
	k.kubectl(t, []byte(fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels:
    pod-security.kubernetes.io/enforce: %s
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: %s
`, name, level, name)), "create", "--validate=strict", "-f", "-")
}

// standInCRDs installs the custom resources the chart renders
// (prometheus-operator's, KEDA's) with schemas that accept any spec: the
// objects are then created like the others, while their fields are held
// by chart_test.go's strict decoding.
func (k *kubeAPIServer) standInCRDs(t *testing.T) {
	t.Helper()
	var docs []string
	for _, c := range []struct{ group, version, kind, plural string }{
		{"monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"},
		{"monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules"},
		{"keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"},
	} {
		docs = append(docs, fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %[4]s.%[1]s
spec:
  group: %[1]s
  scope: Namespaced
  names: {kind: %[3]s, plural: %[4]s, singular: %[5]s, listKind: %[3]sList}
  versions:
  - name: %[2]s
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`, c.group, c.version, c.kind, c.plural, strings.ToLower(c.kind)))
	}
	k.kubectl(t, []byte(strings.Join(docs, "---\n")), "create", "-f", "-")
	k.kubectl(t, nil, "wait", "--for=condition=Established", "--timeout=2m",
		"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com", "crd/scaledobjects.keda.sh")
}
