package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// contractMetrics are the metric names the Go code exports (the API's and
// the workers' /metrics, and asynq's queue collector on the API). Rules and
// dashboard may use these and nothing else.
var contractMetrics = []string{
	// workers
	"pkgfleet_builds_total",
	"pkgfleet_build_duration_seconds_bucket",
	"pkgfleet_build_duration_seconds_sum",
	"pkgfleet_build_duration_seconds_count",
	"pkgfleet_builds_running",
	"pkgfleet_worker_build_slots",
	"pkgfleet_user_namespaces_max",
	"pkgfleet_user_namespaces_in_use",
	"pkgfleet_user_namespaces_needed",
	"pkgfleet_sandbox_start_failures_total",
	"pkgfleet_language_usable",
	"pkgfleet_sandbox_usable",
	"pkgfleet_worker_sandbox_tier",
	"pkgfleet_builds_fenced_total",
	"pkgfleet_build_phase_seconds_bucket",
	"pkgfleet_build_phase_seconds_sum",
	"pkgfleet_build_phase_seconds_count",
	"pkgfleet_build_checks_total",
	// API
	"pkgfleet_user_namespaces_required",
	"pkgfleet_git_builders",
	"pkgfleet_language_workers",
	"pkgfleet_builds_waiting",
	"pkgfleet_polls_total",
	"pkgfleet_reconciler_repairs_total",
	"pkgfleet_build_id_jumps_total",
	"pkgfleet_poll_duration_seconds_bucket",
	"pkgfleet_poll_duration_seconds_sum",
	"pkgfleet_poll_duration_seconds_count",
	"pkgfleet_webhook_deliveries_total",
	"pkgfleet_redis_memory_used_bytes",
	"pkgfleet_redis_memory_max_bytes",
	"pkgfleet_redis_bytes_per_build",
	"pkgfleet_redis_builds",
	"pkgfleet_retention_removed_total",
	// asynq's x/metrics QueueMetricsCollector, on the API
	"asynq_queue_size",
	"asynq_queue_latency_seconds",
	"asynq_tasks_processed_total",
	"asynq_tasks_failed_total",
	"asynq_tasks_enqueued_total",
}

const rulesFile = "deploy/prometheus/pkgfleet-rules.yaml"

// ruleFile is a Prometheus rule file, and the spec of a PrometheusRule.
type ruleFile struct {
	Groups []ruleGroup `json:"groups"`
}

type ruleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []rule `json:"rules"`
}

type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// promtoolTests is a `promtool test rules` file.
type promtoolTests struct {
	RuleFiles          []string `json:"rule_files"`
	EvaluationInterval string   `json:"evaluation_interval"`
	Tests              []struct {
		Name        string `json:"name"`
		Interval    string `json:"interval"`
		InputSeries []struct {
			Series string `json:"series"`
			Values string `json:"values"`
		} `json:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string `json:"eval_time"`
			Alertname string `json:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `json:"exp_labels"`
				ExpAnnotations map[string]string `json:"exp_annotations"`
			} `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

func loadRules(t *testing.T, data []byte) ruleFile {
	t.Helper()
	var rf ruleFile
	if err := yaml.UnmarshalStrict(data, &rf); err != nil {
		t.Fatalf("rule file: %v", err)
	}
	return rf
}

func ruleTestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(repoPath("deploy", "prometheus", "tests", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool test files in deploy/prometheus/tests: %v", err)
	}
	return files
}

func TestRulesPassPromtoolCheck(t *testing.T) {
	t.Parallel()
	run(t, nil, promtool(t), "check", "rules", repoPath(rulesFile))
}

func TestRulesPassTheirPromtoolUnitTests(t *testing.T) {
	t.Parallel()
	run(t, nil, promtool(t), append([]string{"test", "rules"}, ruleTestFiles(t)...)...)
}

func TestEveryAlertHasSeverityAndOperatorAnnotations(t *testing.T) {
	t.Parallel()
	rf := loadRules(t, readRepoFile(t, rulesFile))
	n := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
		}
	}
	if n < 8 {
		t.Errorf("%d alerts; the issue asks for at least 8 kinds", n)
	}
}

// Each alert has a unit test in which it fires and one in which it stays
// quiet, so that neither a rule that never fires nor one that always fires
// gets through.
func TestEveryAlertIsUnitTestedFiringAndQuiet(t *testing.T) {
	t.Parallel()
	rf := loadRules(t, readRepoFile(t, rulesFile))
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, f := range ruleTestFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var pt promtoolTests
		if err := yaml.UnmarshalStrict(data, &pt); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, tc := range pt.Tests {
			for _, at := range tc.AlertRuleTest {
				if len(at.ExpAlerts) > 0 {
					fires[at.Alertname] = true
				} else {
					quiet[at.Alertname] = true
				}
			}
		}
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if !fires[r.Alert] {
				t.Errorf("%s: no promtool test where it fires", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("%s: no promtool test where it stays quiet", r.Alert)
			}
		}
	}
}

var metricName = regexp.MustCompile(`\b(pkgfleet_[a-z0-9_]+|asynq_[a-z0-9_]+)`)

// usedMetrics returns the metric names in PromQL expressions, sorted.
func usedMetrics(exprs []string) []string {
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			seen[m] = true
		}
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

func TestRulesUseOnlyContractMetrics(t *testing.T) {
	t.Parallel()
	rf := loadRules(t, readRepoFile(t, rulesFile))
	var exprs []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	for _, m := range usedMetrics(exprs) {
		if !slices.Contains(contractMetrics, m) {
			t.Errorf("rules use %s, which no pkgfleet component exports", m)
		}
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func TestDashboardShowsBuildsQueueAndNamespaces(t *testing.T) {
	t.Parallel()
	var d dashboard
	if err := json.Unmarshal(readRepoFile(t, "deploy", "grafana", "pkgfleet-dashboard.json"), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("dashboard needs uid, title and schemaVersion; got %q %q %d", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("dashboard needs a datasource variable so it works with any Prometheus; got %v", vars)
	}
	var exprs []string
	titles := map[string]bool{}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		titles[p.Title] = true
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	used := usedMetrics(exprs)
	for _, m := range used {
		if !slices.Contains(contractMetrics, m) {
			t.Errorf("dashboard uses %s, which no pkgfleet component exports", m)
		}
	}
	for _, want := range []string{
		"pkgfleet_builds_total",                  // builds by result
		"pkgfleet_build_duration_seconds_bucket", // p50 / p95
		"asynq_queue_size", "asynq_queue_latency_seconds",
		"pkgfleet_user_namespaces_in_use", "pkgfleet_user_namespaces_max",
	} {
		if !slices.Contains(used, want) {
			t.Errorf("dashboard shows nothing from %s", want)
		}
	}
	all := strings.Join(exprs, "\n")
	for _, q := range []string{"histogram_quantile(0.5,", "histogram_quantile(0.95,"} {
		if !strings.Contains(all, q+" sum by (le, language) (rate(pkgfleet_build_duration_seconds_bucket") {
			t.Errorf("dashboard has no build duration quantile %s", q)
		}
	}
	if !titles["User namespaces in use vs max per worker"] {
		t.Errorf("dashboard lacks the per-worker namespace panel; panels: %v", titles)
	}
}

// The chart cannot read files outside itself, so it ships copies.
func TestChartCopiesOfRulesAndDashboardAreIdentical(t *testing.T) {
	t.Parallel()
	for src, dst := range map[string]string{
		rulesFile:                                "charts/pkgfleet/files/pkgfleet-rules.yaml",
		"deploy/grafana/pkgfleet-dashboard.json": "charts/pkgfleet/files/pkgfleet-dashboard.json",
	} {
		if !bytes.Equal(readRepoFile(t, src), readRepoFile(t, dst)) {
			t.Errorf("%s differs from %s; run: cp %s %s", dst, src, src, dst)
		}
	}
}

func TestLocalPrometheusConfigIsValid(t *testing.T) {
	t.Parallel()
	run(t, nil, promtool(t), "check", "config", repoPath("deploy", "prometheus", "prometheus-local.yml"))
}

// checkPromQL has promtool parse exprs, written as recording rules with
// Grafana's interval variables replaced.
func checkPromQL(t *testing.T, exprs []string) {
	t.Helper()
	rf := ruleFile{Groups: []ruleGroup{{Name: "parse"}}}
	for i, e := range exprs {
		e = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m").Replace(e)
		rf.Groups[0].Rules = append(rf.Groups[0].Rules, rule{Record: "parse:expr" + strconv.Itoa(i), Expr: e})
	}
	data, err := yaml.Marshal(rf)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "exprs.yaml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, nil, promtool(t), "check", "rules", file)
}

func TestDashboardQueriesAreValidPromQL(t *testing.T) {
	t.Parallel()
	var d dashboard
	if err := json.Unmarshal(readRepoFile(t, "deploy", "grafana", "pkgfleet-dashboard.json"), &d); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	checkPromQL(t, exprs)
}
