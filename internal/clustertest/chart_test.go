//go:build cluster

package clustertest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
)

// The chart's pods' labels, by component.
func selector(release, component string) string {
	return "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/component=" + component
}

// TestChartDefaultsOnTheNode installs charts/pkgfleet with its default
// values and --wait, then, on the running release: follows NOTES.txt's
// commands as printed, upgrades to values that let the workers reach the
// test's git host, builds the R and Python examples through the API with
// the CLI, installs them with install.packages and pip from a pod by DNS,
// deletes a worker pod mid-build (the build is retried and succeeds once)
// and the Redis pod (the records survive on its claim), and rolls back.
// The steps share the release: each needs the one before.
func TestChartDefaultsOnTheNode(t *testing.T) {
	n := requireNode(t)
	const ns, release = "pkgfleet", "pkgfleet"
	chart := repoPath("charts", "pkgfleet")
	n.namespace(t, ns, "privileged") // the defaults' worker is Unconfined
	n.volumes(t, ns, release)

	begin := time.Now()
	n.helmCmd(t, "install", release, chart, "-n", ns, "--wait", "--timeout", "8m")
	t.Logf("helm install --wait (default values): %s", time.Since(begin).Round(time.Second))
	n.uninstallAtEnd(t, ns, release)
	n.podsReady(t, ns, time.Minute)

	cli := buildCLI(t)
	token := strings.TrimSpace(n.k(t, "-n", ns, "get", "secret", release+"-admin-token", "-o", "jsonpath={.data.token}"))
	api := &apiClient{t: t, token: decodeBase64(t, token)}

	t.Run("notes", func(t *testing.T) { followNotes(t, n, ns, release, cli) })

	// The workers reach the test's git host on the bridge: a private
	// address, refused unless Git.AllowedHosts names it.
	revision := func() string {
		var h []struct {
			Revision int `json:"revision"`
		}
		if err := json.Unmarshal([]byte(n.helmCmd(t, "history", release, "-n", ns, "-o", "json")), &h); err != nil || len(h) == 0 {
			t.Fatalf("helm history: %v", err)
		}
		return fmt.Sprint(h[len(h)-1].Revision)
	}
	gcfg := func() string {
		return n.k(t, "-n", ns, "get", "configmap", release, "-o", `jsonpath={.data.pkgfleet\.gcfg}`)
	}
	before := gcfg()
	begin = time.Now()
	n.helmCmd(t, "upgrade", release, chart, "-n", ns, "--wait", "--timeout", "6m",
		"--set-string", "config.Git.AllowedHosts="+n.hostIP,
		"--set-json", `api.extraEnv=[{"name":"GIT_SSL_NO_VERIFY","value":"true"}]`,
		"--set-json", `worker.extraEnv=[{"name":"GIT_SSL_NO_VERIFY","value":"true"}]`)
	t.Logf("helm upgrade --wait: %s", time.Since(begin).Round(time.Second))
	if rev := revision(); rev != "2" {
		t.Fatalf("after the upgrade, revision %s, want 2", rev)
	}
	if got := gcfg(); !strings.Contains(got, n.hostIP) || got == before {
		t.Fatalf("the upgraded config does not name %s:\n%s", n.hostIP, got)
	}
	n.podsReady(t, ns, 3*time.Minute)
	api.base = "http://" + n.podIP(t, ns, selector(release, "api")) + ":4242"

	repos := exampleRepos(t, 30*time.Second)
	git := gitHTTPS(t, n, repos)
	cliEnv := []string{"PKGFLEET_ADDRESS=" + api.base, "PKGFLEET_TOKEN=" + api.token}
	pkgfleet := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cli, args...)
		cmd.Env = append(os.Environ(), cliEnv...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pkgfleet %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	t.Run("builds", func(t *testing.T) {
		pkgfleet("create", "source", "--name", "r-demo", "--type", "git")
		pkgfleet("create", "source", "--name", "py-demo", "--type", "git-python")
		pkgfleet("create", "git-builder", "--source", "r-demo", "--url", git+"/hellofleet", "--branch", "main", "--wait")
		pkgfleet("create", "git-builder", "--source", "py-demo", "--name", "hellofleet-py", "--url", git+"/hellofleet-py",
			"--build-trigger", "tags", "--tag-pattern", "v*", "--wait")
		for _, b := range []string{"r-demo/hellofleet", "py-demo/hellofleet-py"} {
			list := api.builds(b)
			if len(list) != 1 {
				t.Fatalf("%s has %d builds, want 1: %+v", b, len(list), list)
			}
			if got := list[0]; got.Status != "succeeded" || got.Version != "0.2.0" || got.SandboxTier != "masked-proc" {
				t.Errorf("build of %s: %s %s, version %q, tier %q", b, got.Status, got.Detail, got.Version, got.SandboxTier)
			}
		}
	})

	t.Run("install from a pod by DNS", func(t *testing.T) {
		// A headless Service of the API pods: its name resolves to their
		// pod IPs, where the chart's ClusterIP Service would need kube-proxy.
		headless := release + "-api-headless"
		n.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %s, namespace: %s}
spec:
  clusterIP: None
  selector: {app.kubernetes.io/instance: %s, app.kubernetes.io/component: api}
  ports: [{name: http, port: 4242, targetPort: http}]
`, headless, ns, release))
		base := fmt.Sprintf("http://%s.%s.svc.cluster.local:4242", headless, ns)
		host := fmt.Sprintf("%s.%s.svc.cluster.local", headless, ns)
		script := `set -eu
lib=$(mktemp -d)
Rscript -e 'install.packages("hellofleet", repos = "` + base + `/cran/r-demo", lib = "'$lib'", quiet = TRUE); library(hellofleet, lib.loc = "'$lib'"); cat(hello("cluster"), packageDescription("hellofleet", lib.loc = "'$lib'")$Version, "\n")'
python3 -m venv /tmp/venv
/tmp/venv/bin/pip install --quiet --disable-pip-version-check --index-url ` + base + `/pypi/py-demo/simple --trusted-host ` + host + ` hellofleet-py==0.2.0
/tmp/venv/bin/python -c 'import hellofleet_py; print("python", hellofleet_py.__version__)'
`
		out := n.runPod(t, ns, "installer", script)
		if !strings.Contains(out, "Hello, cluster! 0.2.0") {
			t.Errorf("R did not install hellofleet 0.2.0 from %s:\n%s", base, out)
		}
		if !strings.Contains(out, "python 0.2.0") {
			t.Errorf("pip did not install hellofleet-py 0.2.0 from %s:\n%s", base, out)
		}
	})

	t.Run("worker deleted mid-build", func(t *testing.T) {
		pkgfleet("create", "source", "--name", "slow", "--type", "git-python")
		pkgfleet("create", "git-builder", "--source", "slow", "--name", "slowfleet-py", "--url", git+"/slowfleet-py",
			"--build-trigger", "tags", "--tag-pattern", "v*", "--wait=false")
		var b apiv1.Build
		waitFor(t, 3*time.Minute, "the slow build runs on a worker", func() (bool, string) {
			list := api.builds("slow/slowfleet-py")
			if len(list) == 0 {
				return false, "no build yet"
			}
			b = list[0]
			return b.Status == "running" && b.Worker != "", b.Status + " " + b.Worker
		})
		pod, _, _ := strings.Cut(b.Worker, ":")
		// SIGTERM, then SIGKILL a second later: the build dies with it.
		n.k(t, "-n", ns, "delete", "pod", pod, "--grace-period=1", "--wait=false")
		b = api.waitBuild(b.ID, 8*time.Minute)
		if b.Status != "succeeded" {
			t.Fatalf("the build whose worker was deleted: %s: %s", b.Status, b.Detail)
		}
		if b.Attempts < 2 {
			t.Errorf("the build succeeded in %d attempt(s); its first worker was deleted under it", b.Attempts)
		}
		if strings.HasPrefix(b.Worker, pod+":") {
			t.Errorf("the build's last attempt ran on the deleted pod %s", pod)
		}
		if list := api.builds("slow/slowfleet-py"); len(list) != 1 {
			t.Errorf("slow/slowfleet-py has %d builds, want 1 (retried, not rebuilt): %+v", len(list), list)
		}
		// One artifact per kind: the retry replaced nothing and added nothing.
		seen := map[string]int{}
		for _, a := range b.Artifacts {
			seen[a.Kind]++
		}
		for kind, c := range seen {
			if c != 1 {
				t.Errorf("the retried build recorded %d %s artifacts: %+v", c, kind, b.Artifacts)
			}
		}
		if seen["wheel"] != 1 {
			t.Errorf("the retried build recorded no wheel: %+v", b.Artifacts)
		}
		n.podsReady(t, ns, 3*time.Minute)
	})

	t.Run("redis pod deleted", func(t *testing.T) {
		want := api.builds("r-demo/hellofleet")
		n.k(t, "-n", ns, "delete", "pod", release+"-redis-0", "--wait=true", "--timeout=2m")
		n.podsReady(t, ns, 3*time.Minute)
		waitFor(t, 2*time.Minute, "the API reads the builds again", func() (bool, string) {
			out, code, _ := run(10*time.Second, nil, "curl", "-fsS", "-H", "Authorization: Bearer "+api.token,
				api.base+"/api/v1/builds?source=r-demo&builder=hellofleet")
			return code == 0, out
		})
		got := api.builds("r-demo/hellofleet")
		if len(got) != len(want) || got[0].ID != want[0].ID || got[0].Status != "succeeded" {
			t.Errorf("after Redis restarted the builds are %+v, were %+v", got, want)
		}
	})

	t.Run("rollback", func(t *testing.T) {
		n.helmCmd(t, "rollback", release, "1", "-n", ns, "--wait", "--timeout", "6m")
		if rev := revision(); rev != "3" {
			t.Fatalf("after the rollback, revision %s, want 3", rev)
		}
		if got := gcfg(); got != before {
			t.Errorf("after the rollback the config is\n%s\nwant the install's\n%s", got, before)
		}
		n.podsReady(t, ns, 3*time.Minute)
	})
}

// runPod runs script in a pod of the worker image (it has R, Python and
// pip) to its end and returns its log; the pod must succeed.
func (n node) runPod(t *testing.T, ns, name, script string) string {
	t.Helper()
	image := strings.TrimSpace(n.k(t, "-n", ns, "get", "deploy", "-l", "app.kubernetes.io/component=worker",
		"-o", "jsonpath={.items[0].spec.template.spec.containers[0].image}"))
	n.k(t, "-n", ns, "run", name, "--image", image, "--image-pull-policy=IfNotPresent", "--restart=Never",
		"--command", "--", "sh", "-c", script)
	defer func() { _, _, _ = run(time.Minute, nil, n.kubectl, "-n", ns, "delete", "pod", name, "--wait=false") }()
	var phase string
	waitFor(t, 5*time.Minute, "pod "+name+" ends", func() (bool, string) {
		phase = strings.TrimSpace(n.k(t, "-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}"))
		return phase == "Succeeded" || phase == "Failed", phase
	})
	out := n.k(t, "-n", ns, "logs", name)
	if phase != "Succeeded" {
		t.Fatalf("pod %s: %s\n%s", name, phase, out)
	}
	return out
}

func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pkgfleet")
	must(t, 5*time.Minute, nil, "go", "build", "-o", bin, "./cmd/pkgfleet")
	return bin
}
