package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// helmVersion is the helm the chart is tested with, built from the Go module
// proxy. Keep it in step with scripts/deploy-deps.sh.
const helmVersion = "v3.19.5"

// kubeVersion is the cluster version helm renders for (a helm built with go
// install would otherwise assume 1.20, below the chart's kubeVersion).
const kubeVersion = "1.33.0"

// root is the repository root.
var root = func() string {
	dir, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	return dir
}()

func repoPath(parts ...string) string {
	return filepath.Join(append([]string{root}, parts...)...)
}

func readRepoFile(t testing.TB, parts ...string) []byte {
	t.Helper()
	data, err := os.ReadFile(repoPath(parts...))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// missingTool fails the test under CI=true and skips it otherwise, as
// testenv.Require does for tools on PATH.
func missingTool(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format+" (CI=true: required)", args...)
	}
	t.Skipf(format, args...)
}

func promtool(t testing.TB) string {
	t.Helper()
	testenv.Require(t, "promtool")
	p, _ := exec.LookPath("promtool")
	return p
}

var (
	helmOnce sync.Once
	helmBin  string
	helmErr  error
)

// helm returns the pinned helm binary: $PKGFLEET_HELM, else the cached
// build in <user cache>/pkgfleet/tools/helm-<version>/helm, built there with
// go install on first use (a few minutes, once per machine).
func helm(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PKGFLEET_HELM"); p != "" {
		return p
	}
	helmOnce.Do(func() { helmBin, helmErr = buildHelm() })
	if helmErr != nil {
		missingTool(t, "helm %s: %v", helmVersion, helmErr)
	}
	return helmBin
}

// HelmPath is where the pinned helm lives in the cache.
func helmPath() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "pkgfleet", "tools", "helm-"+helmVersion, "helm"), nil
}

func buildHelm() (string, error) {
	bin, err := helmPath()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	// Build into a private dir, then rename: concurrent builds never see
	// half a binary.
	dir := filepath.Dir(bin)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(goBin, "install",
		"-ldflags=-X helm.sh/helm/v3/internal/version.version="+helmVersion,
		"helm.sh/helm/v3/cmd/helm@"+helmVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install helm: %v\n%s", err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "helm"), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// run runs a tool and returns its stdout; a failure fails the test with
// the tool's output.
func run(t testing.TB, env []string, name string, args ...string) []byte {
	t.Helper()
	out, err := runErr(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(name), strings.Join(args, " "), err)
	}
	return out
}

func runErr(env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%v\n%s%s", err, stderr.String(), stdout.String())
	}
	return stdout.Bytes(), nil
}

// helmEnv keeps helm's cache, config and data out of $HOME.
func helmEnv(t testing.TB) []string {
	dir := t.TempDir()
	return []string{
		"HELM_CACHE_HOME=" + filepath.Join(dir, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"HELM_DATA_HOME=" + filepath.Join(dir, "data"),
	}
}
