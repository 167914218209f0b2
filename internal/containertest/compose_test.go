//go:build containers

package containertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"sigs.k8s.io/yaml"
)

// composeFile is the stack under test.
var composeFile = repoPath("docker", "compose.yaml")

// reposInContainers is where the test's git repositories are mounted in the
// API and worker containers (file:// URLs, Git.AllowFileURLs).
const reposInContainers = "/srv/repos"

// TestComposeStackBuildsTheExamplesAndServesThemToRAndPip brings up
// docker/compose.yaml (Redis, API, two workers) from the local images,
// builds the example R and Python packages from git through the API, and
// installs them with R's install.packages and pip from the API on
// 127.0.0.1, as a user of the stack would.
func TestComposeStackBuildsTheExamplesAndServesThemToRAndPip(t *testing.T) {
	requireImages(t, apiImage, workerImage, redisImage)
	testenv.Require(t, "git", "Rscript", "python3")
	want := composeWorkerRow(t)
	repos := exampleRepos(t)

	ports := map[string]string{}
	for _, v := range []string{"PKGFLEET_API_PORT", "PKGFLEET_WORKER_1_METRICS_PORT", "PKGFLEET_WORKER_2_METRICS_PORT"} {
		ports[v] = strconv.Itoa(testenv.FreePort(t))
	}
	// The override only mounts the repositories and allows file:// URLs.
	override := filepath.Join(t.TempDir(), "override.yaml")
	mount := fmt.Sprintf(`
    environment:
      PKGFLEET_GIT_ALLOWFILEURLS: "true"
    volumes:
      - %s:%s:ro`, repos, reposInContainers)
	yml := "services:\n  api:" + mount + "\n  worker-1:" + mount + "\n  worker-2:" + mount + "\n"
	if err := os.WriteFile(override, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for k, v := range ports {
		env = append(env, k+"="+v)
	}
	p := startCompose(t, []string{composeFile, override}, env)

	api := &apiClient{t: t, base: "http://127.0.0.1:" + ports["PKGFLEET_API_PORT"]}
	waitFor(t, 2*time.Minute, "the API answers /readyz on 127.0.0.1", func() (bool, string) {
		code, body := api.get("/readyz")
		return code == 200, fmt.Sprintf("%d %s", code, body)
	})
	api.token = strings.TrimSpace(docker(t, "exec", p.container("api"), "cat", "/etc/pkgfleet/secrets/admin-token"))
	if api.token == "" {
		t.Fatal("the init service wrote no admin token")
	}

	// Both workers register with the tier of the row compose's settings are.
	waitFor(t, 3*time.Minute, "two workers in tier "+want.tier, func() (bool, string) {
		var ws struct {
			Workers []struct {
				Name        string `json:"name"`
				SandboxTier string `json:"sandbox_tier"`
			} `json:"workers"`
		}
		body := api.do("GET", "/api/v1/workers", nil, 200)
		if err := json.Unmarshal(body, &ws); err != nil {
			return false, err.Error()
		}
		n := 0
		for _, w := range ws.Workers {
			if w.SandboxTier == want.tier {
				n++
			}
		}
		return n == 2, string(body)
	})

	api.do("POST", "/api/v1/sources", map[string]string{"name": "r-demo", "type": "git"}, 201)
	api.do("POST", "/api/v1/sources", map[string]string{"name": "py-demo", "type": "git-python"}, 201)
	api.do("POST", "/api/v1/sources/r-demo/git-builders", map[string]any{
		"url": "file://" + reposInContainers + "/hellofleet", "branch": "main"}, 201)
	api.do("POST", "/api/v1/sources/py-demo/git-builders", map[string]any{
		"name": "hellofleet-py", "url": "file://" + reposInContainers + "/hellofleet-py",
		"build_trigger": "tags", "tag_pattern": "v*"}, 201)
	for _, builder := range []string{"r-demo/git-builders/hellofleet", "py-demo/git-builders/hellofleet-py"} {
		var run struct {
			Builds []struct {
				ID int64 `json:"id"`
			} `json:"builds"`
		}
		if err := json.Unmarshal(api.do("POST", "/api/v1/sources/"+builder+"/run", map[string]any{}, 0), &run); err != nil || len(run.Builds) == 0 {
			t.Fatalf("run %s: %v %+v", builder, err, run)
		}
		id := run.Builds[0].ID
		var b struct {
			Status      string `json:"status"`
			Detail      string `json:"detail"`
			SandboxTier string `json:"sandbox_tier"`
		}
		waitFor(t, 10*time.Minute, fmt.Sprintf("build %d of %s ends", id, builder), func() (bool, string) {
			body := api.do("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil, 200)
			if err := json.Unmarshal(body, &b); err != nil {
				return false, err.Error()
			}
			return b.Status == "succeeded" || b.Status == "failed" || b.Status == "canceled", string(body)
		})
		if b.Status != "succeeded" {
			t.Fatalf("build %d of %s: %s: %s\n%s", id, builder, b.Status, b.Detail, api.do("GET", fmt.Sprintf("/api/v1/builds/%d/log", id), nil, 200))
		}
		if b.SandboxTier != want.tier {
			t.Errorf("build %d of %s ran in sandbox tier %q, want %q", id, builder, b.SandboxTier, want.tier)
		}
	}

	// R installs the package from the API's CRAN-like repository.
	lib := t.TempDir()
	script := `repos <- "` + api.base + `/cran/r-demo"
install.packages("hellofleet", repos = repos, lib = "` + lib + `", quiet = TRUE)
library(hellofleet, lib.loc = "` + lib + `")
cat(hello("compose"), packageDescription("hellofleet", lib.loc = "` + lib + `")$Version, "\n")`
	out, code, err := command(5*time.Minute, "", nil, "Rscript", "-e", script)
	if err != nil || code != 0 || !strings.Contains(out, "Hello, compose! 0.2.0") {
		t.Errorf("R did not install hellofleet 0.2.0 from the stack: exit %d %v\n%s", code, err, out)
	}

	// pip installs the wheel from the API's PEP 503 index into a venv.
	venv := filepath.Join(t.TempDir(), "venv")
	if out, code, err := command(5*time.Minute, "", nil, "python3", "-m", "venv", venv); err != nil || code != 0 {
		t.Fatalf("python3 -m venv: exit %d %v\n%s", code, err, out)
	}
	out, code, err = command(5*time.Minute, "", nil, filepath.Join(venv, "bin", "pip"), "install", "--quiet",
		"--index-url", api.base+"/pypi/py-demo/simple", "hellofleet-py==0.2.0")
	if err != nil || code != 0 {
		t.Fatalf("pip install from the stack: exit %d %v\n%s", code, err, out)
	}
	out, code, err = command(time.Minute, "", nil, filepath.Join(venv, "bin", "python"), "-c", "import hellofleet_py; print(hellofleet_py.__version__)")
	if err != nil || code != 0 || strings.TrimSpace(out) != "0.2.0" {
		t.Errorf("the installed hellofleet_py: exit %d %v %q", code, err, out)
	}
}

// composeWorkerRow is the measured row whose settings the compose file
// gives its workers: the stack must sandbox in that row's tier.
func composeWorkerRow(t *testing.T) row {
	t.Helper()
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			SecurityOpt []string `json:"security_opt"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	var opts []string
	for _, o := range c.Services["worker-1"].SecurityOpt {
		if !strings.HasPrefix(o, "no-new-privileges") {
			opts = append(opts, o)
		}
	}
	for _, r := range rows {
		if slices.Equal(sorted(r.security), sorted(opts)) {
			return r
		}
	}
	t.Fatalf("compose's worker security_opt %v is no measured row", opts)
	return row{}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// exampleRepos makes the example packages into git repositories with two
// tagged versions each (0.1.0, then 0.2.0 on main), as make run does, owned
// by the containers' uid so that their git accepts them.
func exampleRepos(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, ex := range []struct {
		name, src string
		versioned []string
	}{
		{"hellofleet", "examples/r/hellofleet", []string{"DESCRIPTION"}},
		{"hellofleet-py", "examples/python/hellofleet-py", []string{"pyproject.toml", "src/hellofleet_py/__init__.py"}},
	} {
		files := testenv.CopyTree(t, repoPath(ex.src))
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
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, 10001, 10001)
		})
		if err != nil {
			t.Fatal(err)
		}
	} else if out, err := exec.Command("chmod", "-R", "a+rX", dir).CombinedOutput(); err != nil {
		t.Fatalf("chmod: %v %s", err, out)
	}
	return dir
}

// apiClient talks to the stack's API with its admin token.
type apiClient struct {
	t     *testing.T
	base  string
	token string
}

func (c *apiClient) get(path string) (int, string) {
	resp, err := http.Get(c.base + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// do sends body as JSON and fails the test unless the status is want (any
// 2xx when want is 0).
func (c *apiClient) do(method, path string, body any, want int) []byte {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if (want == 0 && resp.StatusCode/100 != 2) || (want != 0 && resp.StatusCode != want) {
		c.t.Fatalf("%s %s: status %d: %s", method, path, resp.StatusCode, out)
	}
	return out
}
