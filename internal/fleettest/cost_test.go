package fleettest_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/api"
	"github.com/pkgfleet/pkgfleet/internal/recipe"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// commandCounter counts the Redis commands a client sends (a pipeline or
// transaction counts each of its commands), so a benchmark can say how
// many commands each process spends per build.
type commandCounter struct{ n atomic.Int64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// counted returns a client on Redis database db at addr (a unix socket's
// path or host:port) whose commands c counts.
func counted(addr string, db int, c *commandCounter) *redis.Client {
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	rdb := redis.NewClient(&redis.Options{Network: network, Addr: addr, DB: db})
	rdb.AddHook(c)
	return rdb
}

// costProfileEnv names a directory: the cost benchmark's child processes
// then write a CPU profile of the measured stretch there (<stats file's
// name>.pprof), from the first SIGUSR1 to the second.
const costProfileEnv = "PKGFLEET_COST_PROFILE"

// serveStats makes a child process write how many Redis commands it has
// sent to file on SIGUSR1, for the parent to read (see childStats).
func serveStats(file string, c *commandCounter) {
	if file == "" {
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		var prof *os.File
		profiled := false
		for range sig {
			if dir := os.Getenv(costProfileEnv); dir != "" && !profiled {
				switch {
				case prof == nil:
					prof, _ = os.Create(filepath.Join(dir, filepath.Base(file)+".pprof"))
					if prof != nil && pprof.StartCPUProfile(prof) != nil {
						prof.Close()
						prof = nil
					}
				default:
					pprof.StopCPUProfile()
					prof.Close()
					profiled = true
				}
			}
			tmp := file + ".tmp"
			if os.WriteFile(tmp, []byte(strconv.FormatInt(c.n.Load(), 10)), 0o644) == nil {
				os.Rename(tmp, file)
			}
		}
	}()
}

// childUsage is what a child process has used so far: CPU, Redis
// commands and its peak resident memory.
type childUsage struct {
	cpu    time.Duration
	cmds   int64
	maxRSS int64 // KiB
}

// peakRSS is a process's peak resident set (VmHWM) in KiB.
func peakRSS(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM")
}

func childStats(t *testing.T, pid int, file string) childUsage {
	t.Helper()
	os.Remove(file)
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var u childUsage
	testenv.Eventually(t, 10*time.Second, "the child's command count", func() bool {
		raw, err := os.ReadFile(file)
		if err != nil {
			return false
		}
		u.cmds, err = strconv.ParseInt(string(raw), 10, 64)
		return err == nil
	})
	cpu, err := testenv.ProcessCPU(pid, false)
	if err != nil {
		t.Fatal(err)
	}
	rss, err := peakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	u.cpu, u.maxRSS = cpu, rss
	return u
}

// childAPI serves the API of a child process on a local port it writes
// to addrFile, until it is killed.
func childAPI(spec childSpec) error {
	c := &commandCounter{}
	serveStats(spec.Stats, c)
	cfg, err := spec.config()
	if err != nil {
		return err
	}
	srv, err := api.NewServer(cfg, counted(spec.Redis, spec.DB, c), slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if err := os.WriteFile(spec.Addr, []byte(ln.Addr().String()), 0o644); err != nil {
		return err
	}
	return http.Serve(ln, srv.Handler())
}

// noopRecipe "builds" without a checkout or a process: it writes its
// artifact, a source tarball made once (noopTarball), so what a no-op
// build costs is the pipeline's own work, and an index can serve it.
type noopRecipe struct{ tarball []byte }

func (noopRecipe) NoCheckout() bool { return true }

func (r noopRecipe) Build(_ context.Context, in recipe.Input) (*recipe.Output, error) {
	file := filepath.Join(in.Dest, "noop_1.tar.gz")
	if err := os.WriteFile(file, r.tarball, 0o644); err != nil {
		return nil, err
	}
	return &recipe.Output{Package: "noop", Version: "1", Artifacts: []registry.Artifact{{File: filepath.Base(file), Kind: "source"}}}, nil
}

// noopTarball is the R source tarball of package noop 1: its DESCRIPTION.
func noopTarball() []byte {
	desc := []byte("Package: noop\nVersion: 1\nTitle: A No-Op Build\nLicense: MIT\n")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "noop/DESCRIPTION", Mode: 0o644, Size: int64(len(desc)), Typeflag: tar.TypeReg})
	tw.Write(desc)
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// TestNoopBuildCost measures what a build costs the fleet's own processes
// when git and the build tool cost nothing: an API process and a worker
// process (4 slots) building with noopRecipe, each measured on its own (CPU
// from /proc, Redis commands counted by a client hook), against raw asynq
// (a client and a server with a no-op handler, same Redis, same
// concurrency) in the same run. It asserts only that every build
// succeeded with its artifact; scripts/bench.sh prints the BENCH line.
func TestNoopBuildCost(t *testing.T) {
	n := loadBuilds()
	// It measures the build path, not HTTP.WriteRate: n writes at once.
	f := setup(t, n, "PKGFLEET_HTTP_WRITERATE", "0")
	f.builder("noop", registry.TriggerTags, 0)
	addrFile, apiStats, workerStats := filepath.Join(f.dir, "api.addr"), filepath.Join(f.dir, "api.stats"), filepath.Join(f.dir, "worker.stats")
	apiProc := f.child(childSpec{Name: "api", API: true, Addr: addrFile, Stats: apiStats})
	worker := f.child(childSpec{Name: "W", Slots: 4, Noop: true, Stats: workerStats})
	var addr string
	testenv.Eventually(t, 30*time.Second, "the API process's address", func() bool {
		raw, err := os.ReadFile(addrFile)
		addr = string(raw)
		return err == nil && addr != ""
	})
	// Each build its own commit (no clone needs it to exist), so that
	// none is folded into an active one.
	commits := 0
	run := func() int64 {
		commits++
		var resp struct{ Builds []registry.Build }
		json.Unmarshal(testenv.JSON(t, "POST", "http://"+addr+"/api/v1/sources/src/git-builders/noop/rerun",
			map[string]string{"commit_sha": fmt.Sprintf("%040x", commits)}, 202), &resp)
		return resp.Builds[0].ID
	}
	// One build first, so that start-up is not counted.
	f.waitStatus(run(), registry.StatusSucceeded)
	api0, w0 := childStats(t, apiProc.Process.Pid, apiStats), childStats(t, worker.Process.Pid, workerStats)
	start := time.Now()
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = run()
	}
	api1 := childStats(t, apiProc.Process.Pid, apiStats)
	for i, id := range ids {
		if i > 0 && id == ids[i-1] {
			t.Fatalf("builds %d and %d are one build (%d)", i-1, i, id)
		}
		if b := f.waitStatus(id, registry.StatusSucceeded); len(b.Artifacts) != 1 || b.Package != "noop" {
			t.Fatalf("build %d: %+v", id, b)
		}
	}
	elapsed := time.Since(start)
	w1 := childStats(t, worker.Process.Pid, workerStats)

	raw := rawAsynq(t, n)
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	perN := func(c int64) float64 { return float64(c) / float64(n) }
	apiCPU, wCPU := per(api1.cpu-api0.cpu), per(w1.cpu-w0.cpu)
	apiCmds, wCmds := perN(api1.cmds-api0.cmds), perN(w1.cmds-w0.cmds)
	rawCPU, rawCmds := per(raw.cpu), perN(raw.clientCmds+raw.serverCmds)
	t.Logf("BENCH noop-cost builds=%d pkgfleet=%.1f/s raw-asynq=%.1f/s throughput-ratio=%.1fx | "+
		"CPU ms/build: api=%.2f worker=%.2f total=%.2f raw-asynq=%.2f ratio=%.1fx | "+
		"Redis commands/build: api=%.1f worker=%.1f total=%.1f raw-asynq=%.1f (client %.1f, server %.1f) ratio=%.1fx | "+
		"max RSS: api=%.1f MiB worker=%.1f MiB",
		n, float64(n)/elapsed.Seconds(), float64(n)/raw.elapsed.Seconds(), elapsed.Seconds()/raw.elapsed.Seconds(),
		apiCPU, wCPU, apiCPU+wCPU, rawCPU, (apiCPU+wCPU)/rawCPU,
		apiCmds, wCmds, apiCmds+wCmds, rawCmds, perN(raw.clientCmds), perN(raw.serverCmds), (apiCmds+wCmds)/rawCmds,
		float64(api1.maxRSS)/1024, float64(w1.maxRSS)/1024)
}

type rawUsage struct {
	elapsed, cpu           time.Duration
	clientCmds, serverCmds int64
}

// rawAsynq is the anchor: n tasks enqueued by an asynq client and run by an
// asynq server with a no-op handler and the worker's concurrency (4) and
// task-check interval, on the fleet's Redis, in this process.
func rawAsynq(t *testing.T, n int) rawUsage {
	t.Helper()
	_, db := redisServer.DB(t)
	var cc, sc commandCounter
	crdb, srdb := counted(redisServer.Socket, db, &cc), counted(redisServer.Socket, db, &sc)
	defer crdb.Close()
	defer srdb.Close()
	var done atomic.Int64
	all := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(srdb, asynq.Config{
		Concurrency: 4, Queues: map[string]int{"raw": 1}, TaskCheckInterval: 50 * time.Millisecond, LogLevel: asynq.ErrorLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("noop", func(context.Context, *asynq.Task) error {
		if done.Add(1) == int64(n) {
			close(all)
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	client := asynq.NewClientFromRedisClient(crdb)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	c0, s0 := cc.n.Load(), sc.n.Load()
	start := time.Now()
	for i := range n {
		if _, err := client.Enqueue(asynq.NewTask("noop", []byte(strconv.Itoa(i))), asynq.Queue("raw")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		t.Fatal("raw asynq did not finish")
	}
	u := rawUsage{elapsed: time.Since(start), clientCmds: cc.n.Load() - c0, serverCmds: sc.n.Load() - s0}
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	u.cpu = time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	return u
}
