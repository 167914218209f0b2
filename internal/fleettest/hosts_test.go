package fleettest_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// hostsSize is the size of TestFleetOfHostsTakesABurst: small in `go
// test`, PKGFLEET_HOSTS_BUILDERS, PKGFLEET_HOSTS_BUILDS and
// PKGFLEET_HOSTS_DELAYS (one-way, comma-separated) in scripts/bench.sh.
func hostsSize(t *testing.T) (builders, builds int, delays []time.Duration) {
	t.Helper()
	builders, builds = 100, 60
	if n, err := strconv.Atoi(os.Getenv("PKGFLEET_HOSTS_BUILDERS")); err == nil && n > 0 {
		builders = n
	}
	if n, err := strconv.Atoi(os.Getenv("PKGFLEET_HOSTS_BUILDS")); err == nil && n > 0 {
		builds = n
	}
	for _, s := range strings.Split(cmp.Or(os.Getenv("PKGFLEET_HOSTS_DELAYS"), "1ms"), ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			t.Fatalf("PKGFLEET_HOSTS_DELAYS: %v", err)
		}
		delays = append(delays, d)
	}
	return builders, builds, delays
}

// The idle fleet's Redis CPU, and the sampler's, are measured over
// idleWindow each before a burst; the sampler reads a page every
// sampleEvery.
const idleWindow, sampleEvery = 2 * time.Second, 50 * time.Millisecond

// Each worker host runs workersPerHost worker processes of slotsPerWorker
// build slots.
const workersPerHost, slotsPerWorker = 4, 2

// TestFleetOfHostsTakesABurst simulates a fleet on three hosts, each a
// network namespace (hence root): host "redis" runs two API replicas and
// is where Redis is reached; hosts "w1" and "w2" run 4 worker processes
// each (no-op builds: noopRecipe, no clone), joined to "redis" by a veth
// pair each. The link's delay cannot be tc netem's (this kernel has none),
// so it is added in user space: on the redis host's end of each veth, a
// relay (testenv.NewLink) holds every chunk, each way, for the one-way
// delay before passing it to redis-server's unix socket. A Redis command
// from a worker thus takes 2×delay more; the API replicas, on Redis's
// host, use the socket directly. redis-server is the test's own (its CPU
// is this test's alone); the poller does not run.
//
// Builders are made in the registry directly (setup, not measured); the
// burst is POSTed through the API replicas, 8 at a time. For each delay it
// reports pickup (created_at → started_at) p50/p99, Redis CPU per build
// (INFO cpu over the burst: everything Redis did in it, split into the
// idle fleet's and the sampler's rates, measured before it, and the
// rest, the builds' own), slot use (the
// slots' busy time over the burst's wall time), and the API's p99 for GET
// /api/v1/builds and an index page, sampled one at a time (20 a second)
// during the burst (every build is of package noop, so the index has one entry to
// pick from all the source's builds). It asserts that every build
// succeeded in one attempt, that both worker hosts took builds, and that
// the namespaces are gone afterwards. A run killed before its cleanup
// leaves its namespaces and their processes to the next run, which
// removes them (testenv.RemoveStaleNetns).
func TestFleetOfHostsTakesABurst(t *testing.T) {
	testenv.RequireRoot(t, "network namespaces as hosts")
	testenv.Require(t, "ip", "redis-server")
	builders, builds, delays := hostsSize(t)
	t.Run("fleet", func(t *testing.T) {
		h := setupHosts(t, builders, delays[0])
		for round, delay := range delays {
			h.burst(t, round, builds, delay)
		}
	})
	if own, err := testenv.OwnNetns(); err != nil || len(own) != 0 {
		t.Fatalf("namespaces left after the test: %v (%v)", own, err)
	}
}

// hostFleet is the simulated fleet of TestFleetOfHostsTakesABurst.
type hostFleet struct {
	f        *fleet
	redis    *redis.Client // on the socket: the test's own reads
	links    []*testenv.Relay
	client   *http.Client // a client on the redis host
	apis     []string     // the replicas' addresses on the redis host
	builders int
}

func setupHosts(t *testing.T, builders int, delay time.Duration) *hostFleet {
	srv, err := testenv.StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	// The burst measures the build path, not HTTP.WriteRate.
	f := setupOn(t, srv, 2, "PKGFLEET_HTTP_WRITERATE", "0")
	hub := testenv.NewNetns(t, "redis")
	h := &hostFleet{f: f, redis: f.rdb, builders: builders,
		client: &http.Client{Transport: &http.Transport{DialContext: hub.DialContext, MaxIdleConnsPerHost: 16}}}
	t.Cleanup(h.client.CloseIdleConnections)

	for i := range 2 {
		file := filepath.Join(f.dir, fmt.Sprintf("api%d.addr", i))
		f.child(childSpec{Name: fmt.Sprint("api", i), API: true, Addr: file, Netns: hub})
		var addr string
		testenv.Eventually(t, 30*time.Second, "an API replica's address", func() bool {
			raw, err := os.ReadFile(file)
			addr = string(raw)
			return err == nil && addr != ""
		})
		h.apis = append(h.apis, "http://"+addr)
	}
	for i, name := range []string{"w1", "w2"} {
		w := testenv.NewNetns(t, name)
		hub.Link(t, w, fmt.Sprintf("10.231.%d.1/24", i+1), fmt.Sprintf("10.231.%d.2/24", i+1))
		ln, err := hub.Listen("tcp", fmt.Sprintf("10.231.%d.1:6379", i+1))
		if err != nil {
			t.Fatal(err)
		}
		h.links = append(h.links, testenv.NewLink(t, ln, srv.Socket, delay))
		for j := range workersPerHost {
			f.child(childSpec{Name: fmt.Sprintf("%s-%d", name, j), Slots: slotsPerWorker, Noop: true, Netns: w, Redis: ln.Addr().String()})
		}
	}
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	testenv.Eventually(t, time.Minute, "the 8 worker processes' asynq heartbeats", func() bool {
		s, err := insp.Servers()
		return err == nil && len(s) == 2*workersPerHost
	})

	// Builders: one made as the fleet makes them, the rest copies of it
	// in the registry directly (setup; the poller does not run).
	f.builder(hostBuilder(0), registry.TriggerTags, 0)
	b0, err := f.reg.Builder(context.Background(), "src", hostBuilder(0))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < builders; i++ {
		b := &registry.Builder{Source: "src", Name: hostBuilder(i), URL: b0.URL, BuildTrigger: b0.BuildTrigger, CloneDepth: b0.CloneDepth}
		if err := f.reg.CreateBuilder(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func hostBuilder(i int) string { return fmt.Sprintf("b%05d", i) }

// burst sets the links' delay, POSTs n builds through the API replicas
// while sampling their read latency, waits for every build to finish, and
// reports.
func (h *hostFleet) burst(t *testing.T, round, n int, delay time.Duration) {
	for _, l := range h.links {
		l.SetLatency(delay)
	}
	ctx := context.Background()
	// What Redis spends all along, measured before the burst: the idle
	// fleet (asynq's polls and heartbeats of 8 processes over the link),
	// then the same with the sampler reading (the index reads the
	// source's builds, so its cost grows with them).
	rate := func() float64 {
		c0, t0 := redisCPU(t, h.redis), time.Now()
		time.Sleep(idleWindow) // the measurement window, not a synchronisation
		return float64(redisCPU(t, h.redis)-c0) / float64(time.Since(t0))
	}
	idleRate := rate()
	stopSampler := h.sample(t)
	samplerRate := max(0, rate()-idleRate)
	stopSampler()

	cpu0 := redisCPU(t, h.redis)
	start := time.Now()
	stopSampler = h.sample(t)

	ids := make([]int64, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for j := int(next.Add(1)) - 1; j < n; j = int(next.Add(1)) - 1 {
				builder := hostBuilder(j * h.builders / n % h.builders)
				sha := fmt.Sprintf("%040x", round<<32|j)
				id, err := h.rerun(h.apis[j%len(h.apis)], builder, sha)
				if err != nil {
					t.Error(err)
					return
				}
				ids[j] = id
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		stopSampler()
		t.FailNow()
	}
	posted := time.Since(start)

	// Wait for the builds in order, reading each finished one once.
	done := make([]*registry.Build, 0, n)
	testenv.Eventually(t, 30*time.Minute, "the burst's builds to finish", func() bool {
		for len(done) < n {
			b, err := h.f.reg.Build(ctx, ids[len(done)])
			if err != nil {
				t.Fatal(err)
			}
			if !registry.Terminal(b.Status) {
				return false
			}
			done = append(done, b)
		}
		return true
	})
	list, index := stopSampler()
	cpu := redisCPU(t, h.redis) - cpu0
	took := float64(time.Since(start))
	idleShare, samplerShare := time.Duration(idleRate*took), time.Duration(samplerRate*took)

	var pickup, held []time.Duration
	var busy time.Duration
	last := start
	hosts := map[string]int{}
	for _, b := range done {
		if b.Status != registry.StatusSucceeded || b.Attempts != 1 || b.StartedAt == nil || b.FinishedAt == nil {
			t.Fatalf("build %d: %s after %d attempts (%s)", b.ID, b.Status, b.Attempts, b.Detail)
		}
		pickup = append(pickup, b.StartedAt.Sub(b.CreatedAt))
		held = append(held, b.FinishedAt.Sub(*b.StartedAt))
		busy += held[len(held)-1]
		if b.FinishedAt.After(last) {
			last = *b.FinishedAt
		}
		host, _, _ := strings.Cut(b.Worker, "-")
		hosts[host]++
	}
	if hosts["w1"] == 0 || hosts["w2"] == 0 || len(hosts) != 2 {
		t.Fatalf("builds per worker host: %v; want both w1 and w2", hosts)
	}
	if len(list) == 0 || len(index) == 0 {
		t.Fatalf("the sampler made %d list and %d index requests during the burst", len(list), len(index))
	}
	wall := last.Sub(start)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	slots := 2 * workersPerHost * slotsPerWorker
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("BENCH hosts delay=%s (one-way, user-space relay) builders=%d builds=%d workers=%dx%d slots=%d | "+
		"burst %.1f builds/s (POSTed in %s) | pickup p50=%s p99=%s | started->finished p50=%s | redis cpu/build=%.3f ms (the idle fleet's rate %.3f, the sampler's %.3f, the builds' own %.3f; idle fleet %.1f%% of a CPU, sampler %.1f%%) | slot use=%.1f%% | "+
		"API p99 GET /api/v1/builds=%s (n=%d) index PACKAGES=%s (n=%d) | builds per host %v | load %s",
		delay, h.builders, n, 2, workersPerHost, slots,
		float64(n)/wall.Seconds(), posted.Round(time.Millisecond),
		quantile(pickup, 0.5).Round(100*time.Microsecond), quantile(pickup, 0.99).Round(100*time.Microsecond),
		quantile(held, 0.5).Round(100*time.Microsecond),
		ms(cpu), ms(idleShare), ms(samplerShare), ms(cpu-idleShare-samplerShare), 100*idleRate, 100*samplerRate,
		100*busy.Seconds()/(float64(slots)*wall.Seconds()),
		quantile(list, 0.99).Round(100*time.Microsecond), len(list), quantile(index, 0.99).Round(100*time.Microsecond), len(index),
		hosts, strings.Join(strings.Fields(string(load))[:3], " "))
}

// sample reads the two pages at a steady rate, as a user would,
// alternating them and the two replicas, until stop; stop returns the
// latencies.
func (h *hostFleet) sample(t *testing.T) (stop func() (list, index []time.Duration)) {
	var list, index []time.Duration
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(sampleEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			if i >= 2 { // at least one of each page, however short the burst
				select {
				case <-quit:
					return
				case <-tick.C:
				}
			}
			path, into := "/api/v1/builds", &list
			if i%2 == 1 {
				path, into = "/cran/src/src/contrib/PACKAGES", &index
			}
			began := time.Now()
			if _, err := h.get(h.apis[(i/2)%len(h.apis)] + path); err != nil {
				t.Error(err)
				return
			}
			*into = append(*into, time.Since(began))
		}
	}()
	return func() ([]time.Duration, []time.Duration) {
		close(quit)
		<-done
		return list, index
	}
}

// redisCPU is the CPU redis-server has used so far (INFO cpu: user and
// system, its own and its children's).
func redisCPU(t *testing.T, rdb *redis.Client) time.Duration {
	t.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for line := range strings.Lines(info) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && strings.HasPrefix(k, "used_cpu_") && !strings.Contains(k, "main_thread") {
			s, _ := strconv.ParseFloat(v, 64)
			total += s
		}
	}
	return time.Duration(total * float64(time.Second))
}

func (h *hostFleet) get(url string) ([]byte, error) {
	resp, err := h.client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body, err
}

// rerun queues a build of builder's commit sha through the API at base.
func (h *hostFleet) rerun(base, builder, sha string) (int64, error) {
	body, _ := json.Marshal(map[string]string{"commit_sha": sha})
	url := base + "/api/v1/sources/src/git-builders/" + builder + "/rerun"
	resp, err := h.client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out struct{ Builds []registry.Build }
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(raw, &out) != nil || len(out.Builds) == 0 {
		return 0, fmt.Errorf("POST %s: %s: %s", url, resp.Status, raw)
	}
	return out.Builds[0].ID, nil
}
