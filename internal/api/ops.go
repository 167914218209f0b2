package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"time"

	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/hibiken/asynqmon"
	"github.com/pkgfleet/pkgfleet/internal/auth"
	"github.com/pkgfleet/pkgfleet/internal/metrics"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/roster"
	"github.com/redis/go-redis/v9"
)

// fleetRefresh is how often /metrics reads the fleet's state (the
// registry's counts of builders and builds, the workers) from Redis;
// scrapes in between are answered from the last reading. Prometheus
// scrapes every 15-60s, so gauges are at most one scrape old.
const fleetRefresh = 15 * time.Second

// bytesSample is how many of the newest finished builds
// pkgfleet_redis_bytes_per_build measures: MEMORY USAGE of their keys
// (three a build, one pipeline) measures exactly what retention bounds,
// where INFO's used_memory over the record count would also count
// asynq's queues and Redis's fixed overhead, and so swing with the queue
// and overstate a small fleet's builds.
const bytesSample = 20

// newMetrics builds the API's metrics: its own counters, the fleet's state
// read from Redis at most once per fleetRefresh, and asynq's queue
// collector.
func (s *Server) newMetrics() *metrics.API {
	fleet := func() (metrics.FleetState, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st := metrics.FleetState{Builders: map[[2]string]int{}, LanguageWorkers: map[string]int{}}
		builders, err := s.Registry.CountBuildersByKind(ctx)
		if err != nil {
			return st, err
		}
		st.Builders = builders
		var workers []roster.Worker
		if s.Enqueuer.Redis != nil {
			if workers, err = roster.List(ctx, s.Enqueuer.Redis); err != nil {
				return st, err
			}
		}
		st.Required = roster.NewBudget(builders, s.Config.Git.BuildConcurrency, workers).Required
		for _, w := range workers {
			for lang := range w.Languages {
				st.LanguageWorkers[lang]++
			}
		}
		byStatus, err := s.Registry.CountBuildsByStatus(ctx)
		if err != nil {
			return st, err
		}
		st.Waiting = byStatus[registry.StatusWaiting]
		for _, n := range byStatus {
			st.Builds += n
		}
		if s.Enqueuer.Redis != nil {
			if st.RedisUsed, st.RedisMax, err = redisconn.Memory(ctx, s.Enqueuer.Redis); err != nil {
				return st, err
			}
		}
		if st.BytesPerBuild, _, err = s.Registry.BytesPerBuild(ctx, bytesSample); err != nil {
			return st, err
		}
		return st, nil
	}
	return metrics.NewAPI(fleet, fleetRefresh, asynqmetrics.NewQueueMetricsCollector(s.Enqueuer.Inspector))
}

// redisInfoPath is asynqmon's Redis INFO: the server's version, config
// file, memory, clients and keyspace, which are the operator's business,
// not a reader's.
const redisInfoPath = "/dashboard/api/redis_info"

// dashboard mounts asynqmon at /dashboard/ behind the API's auth: a read
// or write token sees the queues read-only, an admin token may act (retry,
// delete, pause: these act on asynq's queues round the build records, so
// they are the operator's, like credentials) and read Redis INFO.
func (s *Server) dashboard(mux *http.ServeMux) error {
	if s.Enqueuer.Redis == nil {
		return errors.New("no Redis client")
	}
	// asynqmon shares the API's Redis client instead of opening pools of
	// its own; its Close would close that client, so it is never called.
	opt := sharedClient{s.Enqueuer.Redis}
	mk := func(readOnly bool) *asynqmon.HTTPHandler {
		return asynqmon.New(asynqmon.Options{RootPath: "/dashboard", RedisConnOpt: opt, ReadOnly: readOnly})
	}
	ro, rw := mk(true), mk(false)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The builds page's sign-in (no tokens: loopback only, full access).
		sess, problem := s.session(r)
		switch {
		case sess == nil:
			if problem == "" {
				problem = "the dashboard needs a read token (basic auth password, bearer, or sign in at /login)"
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="pkgfleet dashboard"`)
			writeError(w, http.StatusUnauthorized, problem)
		case sess.Scope >= auth.Admin:
			rw.ServeHTTP(w, r)
		case path.Clean(r.URL.Path) == redisInfoPath:
			writeError(w, http.StatusForbidden, fmt.Sprintf("token %q has scope %s; Redis INFO needs admin", sess.Who, sess.Scope))
		default:
			ro.ServeHTTP(w, r)
		}
	})
	mux.Handle("/dashboard/", h)
	mux.Handle("/dashboard", http.RedirectHandler("/dashboard/", http.StatusMovedPermanently))
	return nil
}

// sharedClient hands an existing client to asynq's constructors.
type sharedClient struct{ c redis.UniversalClient }

func (o sharedClient) MakeRedisClient() any { return o.c }
