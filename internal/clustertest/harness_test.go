//go:build cluster

package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// root is the repository root.
var root = func() string {
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return dir
}()

func repoPath(parts ...string) string {
	return filepath.Join(append([]string{root}, parts...)...)
}

// testLabel marks the namespaces the tests create, so that the script's
// teardown finds them even after a test binary was killed.
const testLabel = "pkgfleet.cluster/test"

// node is what scripts/test-cluster.sh tells the tests about the node.
type node struct {
	kubectl     string // kubectl binary
	helm        string // helm binary
	dir         string // the run's directory (hostPath volumes go below it)
	hostIP      string // the bridge's address: the host as pods reach it
	kubeletRoot string // the kubelet's --root-dir
}

// requireNode returns the node of the cluster phase; without one the test
// fails under CI=true and skips otherwise.
func requireNode(t *testing.T) node {
	t.Helper()
	n := node{
		kubectl:     os.Getenv("PKGFLEET_KUBECTL"),
		helm:        os.Getenv("PKGFLEET_HELM"),
		dir:         os.Getenv("PKGFLEET_CLUSTER_DIR"),
		hostIP:      os.Getenv("PKGFLEET_CLUSTER_HOST_IP"),
		kubeletRoot: os.Getenv("PKGFLEET_CLUSTER_KUBELET_ROOT"),
	}
	if os.Getenv("KUBECONFIG") == "" || n.kubectl == "" || n.helm == "" || n.dir == "" || n.hostIP == "" || n.kubeletRoot == "" {
		msg := "no single-node cluster: KUBECONFIG, PKGFLEET_KUBECTL, PKGFLEET_HELM and PKGFLEET_CLUSTER_* are set by scripts/test-cluster.sh"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI=true: required)")
		}
		t.Skip(msg)
	}
	return n
}

// run runs name args with a deadline and returns its combined output and
// exit status (-1 when it could not run or timed out).
func run(timeout time.Duration, stdin []byte, name string, args ...string) (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), -1, fmt.Errorf("%s %s: no answer within %s", name, strings.Join(args, " "), timeout)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode(), nil
	}
	if err != nil {
		return string(out), -1, err
	}
	return string(out), 0, nil
}

// must runs a command that has to succeed and returns its output.
func must(t testing.TB, timeout time.Duration, stdin []byte, name string, args ...string) string {
	t.Helper()
	out, code, err := run(timeout, stdin, name, args...)
	if err != nil || code != 0 {
		t.Fatalf("%s %s: exit %d %v\n%s", filepath.Base(name), strings.Join(args, " "), code, err, out)
	}
	return out
}

func (n node) k(t testing.TB, args ...string) string {
	t.Helper()
	return must(t, 5*time.Minute, nil, n.kubectl, args...)
}

func (n node) apply(t testing.TB, yaml string) {
	t.Helper()
	must(t, time.Minute, []byte(yaml), n.kubectl, "apply", "-f", "-")
}

func (n node) helmCmd(t testing.TB, args ...string) string {
	t.Helper()
	return must(t, 10*time.Minute, nil, n.helm, args...)
}

// waitFor polls cond until it reports done or the deadline passes; then
// the test fails with what and the last state cond described.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (done bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		done, state := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, timeout, state)
		}
		<-tick.C
	}
}

// namespace creates a namespace of the test with Pod Security level
// enforce, deleted (with its pods) when the test ends.
func (n node) namespace(t *testing.T, name, enforce string) {
	t.Helper()
	n.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels:
    %s: "true"
    pod-security.kubernetes.io/enforce: %s
`, name, testLabel, enforce))
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _ := run(time.Minute, nil, n.kubectl, "-n", name, "get", "pods,events", "-o", "wide")
			t.Logf("namespace %s:\n%s", name, out)
			for _, c := range []string{"api", "worker", "redis"} {
				out, _, _ := run(time.Minute, nil, n.kubectl, "-n", name, "logs", "--all-containers", "--prefix", "--tail=40",
					"-l", "app.kubernetes.io/component="+c)
				t.Logf("logs of the %s pods:\n%s", c, out)
			}
		}
		begin := time.Now()
		_, _, _ = run(5*time.Minute, nil, n.kubectl, "delete", "namespace", name, "--wait=true", "--timeout=4m")
		t.Logf("namespace %s deleted (its release's pods gone): %s", name, time.Since(begin).Round(time.Second))
	})
}

// volumes makes the hostPath PersistentVolumes for the claims of a release
// of the default values: the Redis pod's and the artifacts'.
func (n node) volumes(t *testing.T, ns, release string) {
	t.Helper()
	n.claimVolumes(t, ns, redisClaim(release, 0), claim{release + "-artifacts", "ReadWriteMany", "50Gi", 10001})
}

// claim is a PersistentVolumeClaim a release makes, and the uid that
// writes its volume.
type claim struct {
	name, mode, size string
	uid              int
}

// redisClaim is the claim of the chart's Redis pod i.
func redisClaim(release string, i int) claim {
	return claim{fmt.Sprintf("data-%s-redis-%d", release, i), "ReadWriteOnce", "8Gi", 999}
}

// claimVolumes makes the hostPath PersistentVolumes that the claims bind
// (the node has no provisioner), bound ahead to those claims, in
// directories owned by the uid that writes them (hostPath ignores fsGroup).
func (n node) claimVolumes(t *testing.T, ns string, claims ...claim) {
	t.Helper()
	for _, v := range claims {
		name := ns + "-" + v.name
		dir := filepath.Join(n.dir, "volumes", name)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, v.uid, v.uid); err != nil {
			t.Fatal(err)
		}
		n.apply(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata:
  name: %s
  labels: {%s: "true"}
spec:
  capacity: {storage: %s}
  accessModes: [%s]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: %s, type: Directory}
  claimRef: {namespace: %s, name: %s}
`, name, testLabel, v.size, v.mode, dir, ns, v.name))
		t.Cleanup(func() { _, _, _ = run(time.Minute, nil, n.kubectl, "delete", "pv", name, "--wait=false") })
	}
}

// podsReady waits until every pod of ns is Ready (completed pods aside).
func (n node) podsReady(t *testing.T, ns string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "every pod of "+ns+" Ready", func() (bool, string) {
		out, code, _ := run(time.Minute, nil, n.kubectl, "-n", ns, "get", "pods", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp} {range .status.conditions[?(@.type=="Ready")]}{.status}{end}{"\n"}{end}`)
		if code != 0 {
			return false, out
		}
		lines := strings.Fields(strings.ReplaceAll(strings.TrimSpace(out), "\n", " | "))
		if len(lines) == 0 {
			return false, "no pods"
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) >= 2 && f[1] == "Succeeded" {
				continue
			}
			if len(f) != 3 || f[2] != "True" {
				return false, out
			}
		}
		return true, out
	})
}

// podIP is the IP of the first running, Ready pod of ns matching selector.
func (n node) podIP(t *testing.T, ns, selector string) string {
	t.Helper()
	var ip string
	waitFor(t, 3*time.Minute, "a Ready pod "+selector+" in "+ns, func() (bool, string) {
		out, _, _ := run(time.Minute, nil, n.kubectl, "-n", ns, "get", "pods", "-l", selector, "-o",
			`jsonpath={range .items[?(@.status.phase=="Running")]}{.metadata.deletionTimestamp}/{.status.podIP}/{range .status.conditions[?(@.type=="Ready")]}{.status}{end}{"\n"}{end}`)
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Split(l, "/"); len(f) == 3 && f[0] == "" && f[1] != "" && f[2] == "True" {
				ip = f[1]
				return true, out
			}
		}
		return false, out
	})
	return ip
}

// gitHTTPS serves the example packages as git repositories over https (git
// http-backend, httptest's self-signed certificate) on the node's bridge
// address, as a git host outside the cluster would. The pods' git takes
// the certificate with GIT_SSL_NO_VERIFY (the test's upgrade values): the
// chart mounts no CA file of a test's. (git:// would need no certificate,
// and its connector now half-closes; https is what most hosts serve.)
func gitHTTPS(t *testing.T, n node, repos string) string {
	t.Helper()
	backend := filepath.Join(strings.TrimSpace(must(t, time.Minute, nil, "git", "--exec-path")), "git-http-backend")
	srv := httptest.NewUnstartedServer(&cgi.Handler{Path: backend,
		Env: []string{"GIT_PROJECT_ROOT=" + repos, "GIT_HTTP_EXPORT_ALL=1"}})
	l, err := net.Listen("tcp", net.JoinHostPort(n.hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return "https://" + l.Addr().String()
}

// exampleRepos makes the example packages into git repositories with two
// tagged versions each (0.1.0, then 0.2.0 on main), and a Python package
// whose build takes slow seconds (for a worker to die under it).
func exampleRepos(t *testing.T, slow time.Duration) string {
	t.Helper()
	dir := t.TempDir()
	for _, ex := range []struct {
		name, src string
		versioned []string
		extra     map[string]string
	}{
		{"hellofleet", "examples/r/hellofleet", []string{"DESCRIPTION"}, nil},
		{"hellofleet-py", "examples/python/hellofleet-py", []string{"pyproject.toml", "src/hellofleet_py/__init__.py"}, nil},
		{"slowfleet-py", "examples/python/hellofleet-py", []string{"pyproject.toml", "src/hellofleet_py/__init__.py"}, map[string]string{
			// setuptools runs setup.py once per PEP 517 hook: the wheel's
			// lasts.
			"setup.py": fmt.Sprintf("import sys, time\nfrom setuptools import setup\nif \"bdist_wheel\" in sys.argv:\n    time.sleep(%d)\nsetup()\n", int(slow.Seconds())),
		}},
	} {
		files := testenv.CopyTree(t, repoPath(ex.src))
		if ex.name == "slowfleet-py" {
			files["pyproject.toml"] = strings.Replace(files["pyproject.toml"], `name = "hellofleet-py"`, `name = "slowfleet-py"`, 1)
		}
		for k, v := range ex.extra {
			files[k] = v
		}
		repo := filepath.Join(dir, ex.name)
		if err := os.Mkdir(repo, 0o755); err != nil {
			t.Fatal(err)
		}
		testenv.Git(t, repo, "init", "--quiet", "--initial-branch=main")
		testenv.Commit(t, repo, files, "version 0.1.0")
		testenv.Git(t, repo, "tag", "v0.1.0")
		for _, f := range ex.versioned {
			files[f] = strings.ReplaceAll(files[f], "0.1.0", "0.2.0")
		}
		testenv.Commit(t, repo, files, "version 0.2.0")
		testenv.Git(t, repo, "tag", "v0.2.0")
	}
	return dir
}

// apiClient talks to the chart's API by pod IP (no kube-proxy routes the
// Service's cluster IP) with the release's admin token.
type apiClient struct {
	t     *testing.T
	base  string
	token string
}

// do sends body as JSON and fails the test unless the status is want (any
// 2xx when want is 0).
func (c *apiClient) do(method, path string, body any, want int) []byte {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if (want == 0 && resp.StatusCode/100 != 2) || (want != 0 && resp.StatusCode != want) {
		c.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, out)
	}
	return out
}

func (c *apiClient) build(id int64) apiv1.Build {
	c.t.Helper()
	var b apiv1.Build
	if err := json.Unmarshal(c.do("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil, 200), &b); err != nil {
		c.t.Fatal(err)
	}
	return b
}

// waitBuild waits for build id to end and returns it.
func (c *apiClient) waitBuild(id int64, timeout time.Duration) apiv1.Build {
	c.t.Helper()
	var b apiv1.Build
	waitFor(c.t, timeout, fmt.Sprintf("build %d ends", id), func() (bool, string) {
		b = c.build(id)
		return b.Status == "succeeded" || b.Status == "failed" || b.Status == "canceled", b.Status + " " + b.Detail
	})
	return b
}

// builds lists the builds of a builder ("source/name"), newest first.
func (c *apiClient) builds(builder string) []apiv1.Build {
	c.t.Helper()
	src, name, _ := strings.Cut(builder, "/")
	var list struct {
		Builds []apiv1.Build `json:"builds"`
	}
	if err := json.Unmarshal(c.do("GET", "/api/v1/builds?source="+src+"&builder="+name, nil, 200), &list); err != nil {
		c.t.Fatal(err)
	}
	return list.Builds
}
