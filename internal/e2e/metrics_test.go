package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// asynqLint is what promtool says of asynq's own collector (gauges named
// *_total upstream); dashboards and asynqmon depend on those names, so
// they are kept, and every other finding fails the test.
var asynqLint = []string{
	`asynq_queue_paused_total non-counter metrics should not have "_total" suffix`,
	`asynq_tasks_enqueued_total non-counter metrics should not have "_total" suffix`,
}

// promtoolCheck runs `promtool check metrics` on an exposition.
func promtoolCheck(t *testing.T, what, exposition string) {
	t.Helper()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var findings []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if line != "" && !slices.Contains(asynqLint, line) {
			findings = append(findings, line)
		}
	}
	if len(findings) > 0 || (err != nil && out.Len() == 0) {
		t.Errorf("promtool check metrics (%s): %v\n%s", what, err, strings.Join(findings, "\n"))
	}
}

func TestMetricsOfAPIAndWorkerFollowTheContract(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "promtool")
	f := setup(t, map[string]string{"PKGFLEET_WORKER_METRICSLISTEN": "127.0.0.1:0"})
	repo := versionedRepo(t, "r/hellofleet", "DESCRIPTION")
	f.do("POST", "/api/v1/sources", map[string]string{"name": "m", "type": "git"}, 201)
	f.do("POST", "/api/v1/sources/m/git-builders", map[string]any{"name": "tags", "url": "file://" + repo, "build_trigger": "tags"}, 201)
	f.do("POST", "/api/v1/sources/m/git-builders", map[string]any{"name": "hello", "url": "file://" + repo}, 201)
	f.mustSucceed(f.run("/api/v1/sources/m/git-builders/hello/run", nil))

	var ops string
	testenv.Eventually(t, 10*time.Second, "the worker's metrics listener", func() bool { ops = f.wkr.OpsAddr(); return ops != "" })
	worker := scrape(t, "http://"+ops+"/metrics")
	for _, want := range []string{
		`pkgfleet_builds_total{language="r",result="succeeded",trigger="manual"} 1`,
		`pkgfleet_build_duration_seconds_count{language="r",result="succeeded"} 1`,
		`pkgfleet_builds_running{language="r"} 0`,
		"pkgfleet_worker_build_slots 2",
		"pkgfleet_user_namespaces_needed 4",
		"pkgfleet_user_namespaces_in_use 0",
		"pkgfleet_user_namespaces_max ",
		`pkgfleet_sandbox_start_failures_total{reason="namespace_limit"} 0`,
		`pkgfleet_build_checks_total{verdict="WARNING"} 0`,
		`pkgfleet_language_usable{language="python"} 1`,
		"pkgfleet_sandbox_usable 1",
		fmt.Sprintf("pkgfleet_worker_sandbox_tier{tier=%q} 1", f.wkr.Info().SandboxTier),
		`pkgfleet_worker_sandbox_tier{tier="none"} 0`,
		// The R build's checkout came from the object cache, fetched first.
		`pkgfleet_git_object_cache_lookups_total{result="miss"} `,
		`pkgfleet_git_object_cache_lookups_total{result="hit"} `,
		"pkgfleet_git_object_cache_evictions_total 0",
	} {
		if !strings.Contains(worker, want) {
			t.Errorf("worker metrics lack %q", want)
		}
	}
	if strings.Contains(worker, `pkgfleet_git_object_cache_lookups_total{result="miss"} 0`) {
		t.Error("the R build's clone did not go through the object cache")
	}
	promtoolCheck(t, "worker", worker)
	scrape(t, "http://"+ops+"/healthz")
	scrape(t, "http://"+ops+"/readyz")

	api := scrape(t, f.api.URL+"/metrics")
	for _, want := range []string{
		// ((1 tag builder × 25) + 1 commit builder) × 2
		"pkgfleet_user_namespaces_required 52",
		`pkgfleet_git_builders{language="r",trigger="tags"} 1`,
		`pkgfleet_language_workers{language="r"} 1`,
		"pkgfleet_builds_waiting 0",
		`pkgfleet_polls_total{outcome="error"} 0`,
		`asynq_queue_size{queue="builds:r"}`,
	} {
		if !strings.Contains(api, want) {
			t.Errorf("API metrics lack %q", want)
		}
	}
	promtoolCheck(t, "api", api)

	// The queue dashboard is mounted (no tokens here: full access on loopback).
	if page := scrape(t, f.api.URL+"/dashboard/"); !strings.Contains(page, "<html") && !strings.Contains(page, "<!doctype") {
		t.Errorf("dashboard page:\n%.300s", page)
	}
	scrape(t, f.api.URL+"/dashboard/api/queues")
}
