// Package metrics defines pkgfleet's Prometheus metrics, once, for the
// worker and the API: names, help, labels and buckets. The names are a
// contract with deploy/prometheus/pkgfleet-rules.yaml and the Grafana
// dashboard; deploy's tests hold the two together.
//
// Every method is safe on a nil receiver, so code paths without metrics
// (tests, the CLI) need no checks.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Build results, the values of the result label.
const (
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
	ResultCanceled  = "canceled"
	ResultRetried   = "retried"
)

// buildBuckets span quick Python wheels to hour-long builds.
var buildBuckets = []float64{1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 2400, 3600}

// phaseBuckets span a millisecond's bookkeeping to an hour's wait.
var phaseBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1200, 3600}

// Worker holds a worker's metrics.
type Worker struct {
	reg             *prometheus.Registry
	tiers           []string
	builds          *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	running         *prometheus.GaugeVec
	sandboxFailures *prometheus.CounterVec
	languageUsable  *prometheus.GaugeVec
	sandboxTier     *prometheus.GaugeVec
	sandboxUsable   prometheus.Gauge
	fenced          *prometheus.CounterVec
	phases          *prometheus.HistogramVec
	checks          *prometheus.CounterVec
	name            string
}

// WorkerState is read at every scrape.
type WorkerState struct {
	Name              string // the worker's name, the worker label of pkgfleet_builds_fenced_total
	Slots             func() int
	NamespacesInUse   func() int
	MaxUserNamespaces func() (int, error)
	// ObjectCache reads the worker's git object cache: its bytes on disk
	// (-1 before it was measured), its clones that found their commit
	// there (hits) and those that fetched first (misses), and the
	// remotes evicted. Nil: no cache.
	ObjectCache func() (bytes, hits, misses, evictions int64)
	// Tiers are the sandbox tiers pkgfleet_worker_sandbox_tier lists
	// (the worker passes the sandbox's, so this package needs no sandbox).
	Tiers []string
}

// NewWorker registers a worker's metrics.
func NewWorker(st WorkerState) *Worker {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Worker{
		reg: reg, tiers: st.Tiers,
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkgfleet_builds_total", Help: "Build attempts finished by this worker, by language, trigger and result.",
		}, []string{"language", "trigger", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pkgfleet_build_duration_seconds", Help: "Wall-clock time of build attempts (clone, build, store).", Buckets: buildBuckets,
		}, []string{"language", "result"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pkgfleet_builds_running", Help: "Builds running on this worker now.",
		}, []string{"language"}),
		sandboxFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkgfleet_sandbox_start_failures_total", Help: "Sandboxes that could not start, by reason (namespace_limit: the kernel refused a user namespace).",
		}, []string{"reason"}),
		languageUsable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pkgfleet_language_usable", Help: "1 when this worker builds the language, 0 while its probe fails (it is re-probed).",
		}, []string{"language"}),
		sandboxTier: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pkgfleet_worker_sandbox_tier", Help: "1 for the sandbox tier this worker sets up for builds (full, masked-proc, none), 0 for the others.",
		}, []string{"tier"}),
		sandboxUsable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pkgfleet_sandbox_usable", Help: "1 when the user-namespace sandbox passed its probe (at start or a re-probe).",
		}),
		fenced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkgfleet_builds_fenced_total",
			Help: "Builds this worker stopped because their hold was lost, by reason (fenced: the worker could not confirm its hold in time, as when Redis is unreachable from it; superseded: a newer attempt of the build took over).",
		}, []string{"worker", "reason"}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pkgfleet_build_phase_seconds", Help: "Time of each phase of a build (queued, waiting, clone, sandbox_start, build, check, checks, store, record), by language.", Buckets: phaseBuckets,
		}, []string{"phase", "language"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkgfleet_build_checks_total", Help: "Check stages (R CMD check, a Python check command) this worker ran, by verdict (OK, NOTE, WARNING, ERROR, failed: could not run to its end).",
		}, []string{"verdict"}),
		name: st.Name,
	}
	m.fenced.WithLabelValues(st.Name, "fenced")
	m.fenced.WithLabelValues(st.Name, "superseded")
	// Start at 0 so that increase() sees the first failure.
	m.sandboxFailures.WithLabelValues("namespace_limit")
	m.sandboxFailures.WithLabelValues("unavailable")
	for _, v := range []string{apiv1.CheckOK, apiv1.CheckNote, apiv1.CheckWarning, apiv1.CheckError, apiv1.CheckFailed} {
		m.checks.WithLabelValues(v)
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(m.builds, m.duration, m.fenced, m.phases, m.checks, m.running, m.sandboxFailures, m.languageUsable, m.sandboxTier, m.sandboxUsable,
		gauge("pkgfleet_worker_build_slots", "Build slots of this worker.", func() float64 { return float64(call(st.Slots)) }),
		gauge("pkgfleet_user_namespaces_in_use", "User namespaces held by this worker's running sandboxes.", func() float64 { return float64(call(st.NamespacesInUse)) }),
		gauge("pkgfleet_user_namespaces_needed", "User namespaces this worker's slots need at most (2 per build).", func() float64 { return float64(2 * call(st.Slots)) }),
		gauge("pkgfleet_user_namespaces_max", "The host's /proc/sys/user/max_user_namespaces as this worker sees it.", func() float64 {
			if st.MaxUserNamespaces == nil {
				return -1
			}
			n, err := st.MaxUserNamespaces()
			if err != nil {
				return -1
			}
			return float64(n)
		}),
	)
	if oc := st.ObjectCache; oc != nil {
		counter := func(name, help, result string, f func() float64) prometheus.Collector {
			var labels prometheus.Labels
			if result != "" {
				labels = prometheus.Labels{"result": result}
			}
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f)
		}
		const lookups = "Clones from the git object cache: hit when it had the commit, miss when it fetched from the remote first."
		reg.MustRegister(
			gauge("pkgfleet_git_object_cache_bytes", "Bytes on disk of the worker's git object cache (Worker.ObjectCacheSize bounds it), measured after each fetch into it; -1 before the first.",
				func() float64 { b, _, _, _ := oc(); return float64(b) }),
			counter("pkgfleet_git_object_cache_lookups_total", lookups, "hit", func() float64 { _, h, _, _ := oc(); return float64(h) }),
			counter("pkgfleet_git_object_cache_lookups_total", lookups, "miss", func() float64 { _, _, m, _ := oc(); return float64(m) }),
			counter("pkgfleet_git_object_cache_evictions_total", "Remotes' caches removed, least recently used first, to keep the git object cache within Worker.ObjectCacheSize.", "",
				func() float64 { _, _, _, e := oc(); return float64(e) }),
		)
	}
	return m
}

func call(f func() int) int {
	if f == nil {
		return 0
	}
	return f()
}

// SandboxTier records the tier of the worker's sandbox, one of
// WorkerState.Tiers, and whether the sandbox is usable.
func (m *Worker) SandboxTier(tier string, usable bool) {
	if m == nil {
		return
	}
	for _, t := range m.tiers {
		v := 0.0
		if t == tier {
			v = 1
		}
		m.sandboxTier.WithLabelValues(t).Set(v)
	}
	if usable {
		m.sandboxUsable.Set(1)
	} else {
		m.sandboxUsable.Set(0)
	}
}

// LanguageUsable records the probe of a language.
func (m *Worker) LanguageUsable(lang string, ok bool) {
	if m == nil {
		return
	}
	v := 0.0
	if ok {
		v = 1
	}
	m.languageUsable.WithLabelValues(lang).Set(v)
}

// BuildStarted counts a running build; call the returned func when it ends.
func (m *Worker) BuildStarted(lang, trigger string) func(result string) {
	if m == nil {
		return func(string) {}
	}
	start := time.Now()
	m.running.WithLabelValues(lang).Inc()
	return func(result string) {
		m.running.WithLabelValues(lang).Dec()
		m.builds.WithLabelValues(lang, trigger, result).Inc()
		m.duration.WithLabelValues(lang, result).Observe(time.Since(start).Seconds())
	}
}

// Fenced counts a build this worker stopped because its hold was lost;
// reason is fence.ReasonFenced or fence.ReasonSuperseded.
func (m *Worker) Fenced(reason string) {
	if m == nil {
		return
	}
	m.fenced.WithLabelValues(m.name, reason).Inc()
}

// Phases observes the phases of a build of lang.
func (m *Worker) Phases(lang string, phases []apiv1.Phase) {
	if m == nil {
		return
	}
	for _, p := range phases {
		m.phases.WithLabelValues(p.Phase, lang).Observe(p.MS / 1000)
	}
}

// Check counts a check stage that ended with verdict (apiv1.Check).
func (m *Worker) Check(verdict string) {
	if m == nil {
		return
	}
	m.checks.WithLabelValues(verdict).Inc()
}

// SandboxFailure counts a sandbox that could not start.
func (m *Worker) SandboxFailure(reason string) {
	if m == nil {
		return
	}
	m.sandboxFailures.WithLabelValues(reason).Inc()
}

// Handler serves /metrics.
func (m *Worker) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// API holds the API's metrics.
type API struct {
	reg      *prometheus.Registry
	polls    *prometheus.CounterVec
	pollTime prometheus.Histogram
	webhooks *prometheus.CounterVec
	outbound *prometheus.CounterVec
	orphans  prometheus.Counter
	repairs  *prometheus.CounterVec
	idJumps  *prometheus.CounterVec
	retained *prometheus.CounterVec
}

// FleetState is read from Redis, at most once per refresh (see NewAPI).
type FleetState struct {
	Required        int               // PPM's user-namespace formula
	Builders        map[[2]string]int // (language, trigger) → count
	LanguageWorkers map[string]int    // language → live workers able to build it
	Waiting         int               // builds waiting for a slot
	Builds          int               // build records in Redis
	// Redis's memory: used and maxmemory (0: no limit), from INFO; and
	// what one finished build costs, from MEMORY USAGE of a sample (0:
	// no finished build yet).
	RedisUsed, RedisMax int64
	BytesPerBuild       float64
}

// NewAPI registers the API's metrics; fleet is called at most once per
// refresh, whatever the scrape rate, and extra collectors (asynq's queue
// collector) are registered beside them.
func NewAPI(fleet func() (FleetState, error), refresh time.Duration, extra ...prometheus.Collector) *API {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &API{
		reg: reg,
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkgfleet_polls_total", Help: "Polls of git remotes, by outcome (ok, error).",
		}, []string{"outcome"}),
		pollTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pkgfleet_poll_duration_seconds", Help: "Time to poll one remote (ls-remote and queueing).",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkgfleet_webhook_deliveries_total", Help: "Webhook deliveries, by provider and outcome (accepted, rejected, replayed, error).",
		}, []string{"provider", "outcome"}),
		// pkgfleet_webhook_deliveries_total is the inbound webhooks'
		// (provider, outcome) already; the outbound ones count apart.
		outbound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkgfleet_webhook_outbound_deliveries_total", Help: "Attempts to deliver outbound webhooks (internal/webhook), by result (delivered, retrying, failed: given up, refused: by the outbound policy).",
		}, []string{"result"}),
		orphans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pkgfleet_store_orphans_removed_total", Help: "Artifact files no build record named, removed by the orphan sweep after Storage.OrphanGrace.",
		}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkgfleet_reconciler_repairs_total", Help: "Inconsistencies the reconciler repaired, by kind (docs/fleet.md, \"The reconciler\").",
		}, []string{"kind"}),
		idJumps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkgfleet_build_id_jumps_total", Help: "Jumps of the build-id counter past ids Redis may have lost, by reason.",
		}, []string{"reason"}),
		retained: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pkgfleet_retention_removed_total", Help: "What the retention pass removed, by kind: build (records dropped from Redis), file (their stored logs and unserved artifacts), redis_log (finished builds' logs moved out of Redis into the store).",
		}, []string{"kind"}),
	}
	m.polls.WithLabelValues("ok")
	m.polls.WithLabelValues("error")
	for _, r := range []string{apiv1.DeliveryDelivered, apiv1.DeliveryRetrying, apiv1.DeliveryFailed, apiv1.DeliveryRefused} {
		m.outbound.WithLabelValues(r)
	}
	reg.MustRegister(m.polls, m.pollTime, m.webhooks, m.outbound, m.orphans, m.repairs, m.idJumps, m.retained, &fleetCollector{fleet: fleet, refresh: refresh})
	reg.MustRegister(extra...)
	return m
}

// Poll records one poll.
func (m *API) Poll(outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.polls.WithLabelValues(outcome).Inc()
	m.pollTime.Observe(d.Seconds())
}

// Webhook records one delivery.
func (m *API) Webhook(provider, outcome string) {
	if m == nil {
		return
	}
	m.webhooks.WithLabelValues(provider, outcome).Inc()
}

// OutboundWebhook counts an attempt to deliver an outbound webhook.
func (m *API) OutboundWebhook(result string) {
	if m == nil {
		return
	}
	m.outbound.WithLabelValues(result).Inc()
}

// OrphansRemoved counts files the orphan sweep removed.
func (m *API) OrphansRemoved(n int) {
	if m == nil {
		return
	}
	m.orphans.Add(float64(n))
}

// Retention shows each of kinds at 0 and returns what counts n removed
// of a kind.
func (m *API) Retention(kinds []string) func(kind string, n int) {
	if m == nil {
		return nil
	}
	for _, k := range kinds {
		m.retained.WithLabelValues(k)
	}
	return func(kind string, n int) { m.retained.WithLabelValues(kind).Add(float64(n)) }
}

// Repairs shows each of kinds at 0 and returns what counts one repair.
func (m *API) Repairs(kinds []string) func(kind string) {
	if m == nil {
		return nil
	}
	for _, k := range kinds {
		m.repairs.WithLabelValues(k)
	}
	return func(kind string) { m.repairs.WithLabelValues(kind).Inc() }
}

// IDJump counts one jump of the build-id counter.
func (m *API) IDJump(reason string) {
	if m == nil {
		return
	}
	m.idJumps.WithLabelValues(reason).Inc()
}

// Handler serves /metrics.
func (m *API) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

var (
	descRequired = prometheus.NewDesc("pkgfleet_user_namespaces_required",
		"User namespaces the fleet needs: ((tag builders × Git.BuildConcurrency) + commit builders) × 2.", nil, nil)
	descBuilders = prometheus.NewDesc("pkgfleet_git_builders", "Git-builders, by language and trigger.", []string{"language", "trigger"}, nil)
	descWorkers  = prometheus.NewDesc("pkgfleet_language_workers", "Live workers able to build the language.", []string{"language"}, nil)
	descWaiting  = prometheus.NewDesc("pkgfleet_builds_waiting", "Builds waiting for a build slot.", nil, nil)
	descBuilds   = prometheus.NewDesc("pkgfleet_redis_builds", "Build records in Redis (what retention bounds).", nil, nil)
	descPerBuild = prometheus.NewDesc("pkgfleet_redis_bytes_per_build",
		"Bytes of Redis memory one finished build costs: MEMORY USAGE of the keys of a sample of the newest finished builds (record, log while Redis holds it, attempt), averaged.", nil, nil)
	descRedisUsed = prometheus.NewDesc("pkgfleet_redis_memory_used_bytes", "Redis's used_memory (INFO memory).", nil, nil)
	descRedisMax  = prometheus.NewDesc("pkgfleet_redis_memory_max_bytes", "Redis's maxmemory (INFO memory); 0: no limit set.", nil, nil)
)

// fleetCollector reads the fleet's state from Redis at most once per
// refresh and answers the scrapes in between from that reading: /metrics
// needs no token, and reading the fleet walks every builder, so the scrape
// rate must not set how often that happens. Concurrent scrapes wait for
// one reading.
type fleetCollector struct {
	fleet   func() (FleetState, error)
	refresh time.Duration

	mu   sync.Mutex
	at   time.Time // of the last reading; zero before the first
	last FleetState
	err  error
}

func (c *fleetCollector) read() (FleetState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= c.refresh {
		c.last, c.err = c.fleet()
		c.at = time.Now()
	}
	return c.last, c.err
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequired
	ch <- descBuilders
	ch <- descWorkers
	ch <- descWaiting
	ch <- descBuilds
	ch <- descPerBuild
	ch <- descRedisUsed
	ch <- descRedisMax
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descRequired, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(descRequired, prometheus.GaugeValue, float64(st.Required))
	ch <- prometheus.MustNewConstMetric(descWaiting, prometheus.GaugeValue, float64(st.Waiting))
	ch <- prometheus.MustNewConstMetric(descBuilds, prometheus.GaugeValue, float64(st.Builds))
	ch <- prometheus.MustNewConstMetric(descPerBuild, prometheus.GaugeValue, st.BytesPerBuild)
	ch <- prometheus.MustNewConstMetric(descRedisUsed, prometheus.GaugeValue, float64(st.RedisUsed))
	ch <- prometheus.MustNewConstMetric(descRedisMax, prometheus.GaugeValue, float64(st.RedisMax))
	for k, n := range st.Builders {
		ch <- prometheus.MustNewConstMetric(descBuilders, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	for _, lang := range []string{"r", "python"} {
		ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(st.LanguageWorkers[lang]), lang)
	}
}
