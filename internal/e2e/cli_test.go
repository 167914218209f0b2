package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/cli"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// pkgfleet runs the CLI against the fleet's API.
func (f *fleet) pkgfleet(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	app := &cli.App{Stdout: &out, Stderr: &errb, PollInterval: 50 * time.Millisecond,
		Getenv: func(k string) string {
			if k == "PKGFLEET_ADDRESS" {
				return f.api.URL
			}
			return ""
		}}
	code = cli.Main(context.Background(), args, app)
	return out.String(), errb.String(), code
}

var (
	shaRE  = regexp.MustCompile(`\b[0-9a-f]{12}\b`)
	timeRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)
	repoRE = regexp.MustCompile(`file:///\S+`)
)

func normalize(s string) string {
	s = shaRE.ReplaceAllString(s, "<commit-sha>") // as wide as a short sha: columns stay aligned
	s = timeRE.ReplaceAllString(s, "<time>")
	return repoRE.ReplaceAllString(s, "<repo>")
}

func TestCLIDrivesTheAPI(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	repo := versionedRepo(t, "r/hellofleet", "DESCRIPTION")

	out, errOut, code := f.pkgfleet("create", "source", "--name", "cli-r", "--type", "git")
	if code != 0 || out != "Source cli-r (git) created.\n" {
		t.Fatalf("create source: %d %q %q", code, out, errOut)
	}
	out, errOut, code = f.pkgfleet("create", "git-builder", "--source", "cli-r", "--url", "file://"+repo, "--branch", "main")
	if code != 0 {
		t.Fatalf("create git-builder: %d\n%s\n%s", code, out, errOut)
	}
	want := "Git-builder hellofleet created in source cli-r.\n" +
		"Cloning repo and waiting for the initial package build...\n" +
		"Build 1 hellofleet@main (<commit-sha>): queued\n"
	if got := normalize(out); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "Build 1 hellofleet@main (<commit-sha>): succeeded hellofleet 0.2.0 → hellofleet_0.2.0.tar.gz\n") {
		t.Fatalf("create --wait output:\n%s\nwant it to start with\n%s", got, want)
	}

	out, _, _ = f.pkgfleet("list", "git-builders", "--source", "cli-r")
	wantList := `Git Builders:
- hellofleet
    Source: cli-r
    URL: <repo>
    Trigger: commits
    Branch: main
    Clone depth: 1
`
	if got := normalize(out); got != wantList {
		t.Fatalf("list git-builders:\n%s\nwant\n%s", got, wantList)
	}
	out, _, _ = f.pkgfleet("list", "git-builds", "--source", "cli-r", "--name", "hellofleet")
	wantBuilds := "ID  SOURCE  BUILDER     REF   COMMIT        STATUS     VERSION  CHECK  ATTEMPTS  FETCHED  PHASES\n" +
		"1   cli-r   hellofleet  main  <commit-sha>  succeeded  0.2.0    -      1/2       -        queued "
	if got := normalize(out); !strings.HasPrefix(got, wantBuilds) || !regexp.MustCompile(`, clone [0-9.]+(µs|ms|s), sandbox_start [0-9.]+(µs|ms|s), build [0-9.]+(µs|ms|s), checks [0-9.]+(µs|ms|s), store [0-9.]+(µs|ms|s), record [0-9.]+(µs|ms|s)\n$`).MatchString(got) {
		t.Fatalf("list git-builds:\n%q\nwant it to start with\n%q and list the phases", got, wantBuilds)
	}

	// JSON output parses into the API's types.
	out, _, code = f.pkgfleet("-o", "json", "rerun", "git-builder", "--source", "cli-r", "--name", "hellofleet", "--tag", "v0.1.0")
	var res struct{ Builds []registry.Build }
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 || len(res.Builds) != 1 || res.Builds[0].Version != "0.1.0" {
		t.Fatalf("rerun -o json: %d %v\n%s", code, err, out)
	}
	out, _, _ = f.pkgfleet("logs", "--build-id", "1")
	if !strings.Contains(out, "R CMD build") || !strings.Contains(out, "==> phases: queued ") {
		t.Fatalf("logs:\n%s", out)
	}

	// The fleet, in words.
	testenv.Eventually(t, 10*time.Second, "the worker in `list workers`", func() bool {
		out, _, _ = f.pkgfleet("list", "workers")
		return strings.Contains(out, "(user-namespace)") && strings.Contains(out, "r 4.") && strings.Contains(out, "0/4/")
	})
	if tier := f.wkr.Info().SandboxTier; !strings.Contains(out, "SANDBOX TIER") || !regexp.MustCompile(`\)\s+`+regexp.QuoteMeta(tier)+`\s+2\s`).MatchString(out) {
		t.Fatalf("list workers should show sandbox tier %q:\n%s", tier, out)
	}
	out, _, _ = f.pkgfleet("namespaces")
	if !strings.Contains(out, "((0 × 25) + 1) × 2 = 2 user namespaces") || !strings.Contains(out, "WORKER") {
		t.Fatalf("namespaces:\n%s", out)
	}

	// Errors are one line on stderr and a non-zero exit.
	_, errOut, code = f.pkgfleet("create", "git-builder", "--source", "cli-r", "--name", "x", "--url", "ext::sh -c id")
	if code == 0 || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "pkgfleet: ") {
		t.Fatalf("bad url: %d %q", code, errOut)
	}
	_, errOut, code = f.pkgfleet("rerun", "git-builder", "--source", "cli-r", "--name", "nope", "--tag", "v1")
	if code == 0 || !strings.Contains(errOut, "not found") {
		t.Fatalf("unknown builder: %d %q", code, errOut)
	}
}

func TestCLIWaitExitsNonZeroWhenTheBuildFails(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	files := map[string]string{"DESCRIPTION": "Package: broken\nVersion: 1.0\nAuthors@R: person(((\n"}
	repo := versionedRepoFrom(t, files)
	f.pkgfleet("create", "source", "--name", "r")
	out, _, code := f.pkgfleet("create", "git-builder", "--source", "r", "--name", "broken", "--url", "file://"+repo)
	if code != 1 || !strings.Contains(out, ": failed: ") || !strings.Contains(out, "pkgfleet logs --build-id 1") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}
