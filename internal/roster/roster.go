// Package roster is the live list of workers: each worker heartbeats what
// it can build (languages, versions, sandbox mode), its build slots and its
// user-namespace budget to Redis with a TTL, so the API can show the
// fleet, tell a user that no live worker builds their language, and
// compare the namespaces the builders need with what the hosts allow.
//
// It does not schedule anything: asynq queues per language and the build
// slots (internal/semaphore) do that.
package roster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/redis/go-redis/v9"
)

const keyWorkers = "pkgfleet:workers" // zset name → heartbeat expiry (ms)

func keyWorker(name string) string { return "pkgfleet:worker:" + name }

// NamespacesPerBuild is how many user namespaces a sandboxed build uses:
// an outer one that sets up the mounts and a nested one for the build, as
// PPM documents. It is sandbox.NamespacesPerBuild (a test holds them
// equal), written out so that the API and the CLI, which read the roster,
// do not link the sandbox.
const NamespacesPerBuild = 2

// Worker is one worker process as it last reported itself, and Language
// one language it builds (see apiv1).
type (
	Worker   = apiv1.Worker
	Language = apiv1.WorkerLanguage
)

// Heartbeat records w as alive for ttl.
func Heartbeat(ctx context.Context, rdb redis.UniversalClient, w Worker, ttl time.Duration) error {
	w.LastSeen = time.Now().UTC()
	data, _ := json.Marshal(w)
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, keyWorker(w.Name), data, ttl)
		p.ZAdd(ctx, keyWorkers, redis.Z{Score: float64(w.LastSeen.Add(ttl).UnixMilli()), Member: w.Name})
		return nil
	})
	if err != nil {
		return fmt.Errorf("worker heartbeat: %w", err)
	}
	return nil
}

// Remove takes a stopping worker off the list at once.
func Remove(ctx context.Context, rdb redis.UniversalClient, name string) error {
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, keyWorker(name))
		p.ZRem(ctx, keyWorkers, name)
		return nil
	})
	return err
}

// Beat heartbeats every interval (the TTL is three intervals) until ctx
// ends, then removes the worker. report is called for each beat.
func Beat(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger, every time.Duration, report func() Worker) {
	ttl := 3 * every
	t := time.NewTicker(every)
	defer t.Stop()
	var name string
	for {
		w := report()
		name = w.Name
		if err := Heartbeat(ctx, rdb, w, ttl); err != nil && ctx.Err() == nil {
			log.Warn("worker heartbeat failed", "error", err)
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = Remove(rctx, rdb, name)
			cancel()
			return
		case <-t.C:
		}
	}
}

// List returns the live workers by name.
func List(ctx context.Context, rdb redis.UniversalClient) ([]Worker, error) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	rdb.ZRemRangeByScore(ctx, keyWorkers, "-inf", "("+now)
	names, err := rdb.ZRange(ctx, keyWorkers, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	if len(names) == 0 {
		return []Worker{}, nil
	}
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = keyWorker(n)
	}
	vals, err := rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	out := []Worker{}
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // expired between the two calls
		}
		var w Worker
		if json.Unmarshal([]byte(s), &w) == nil {
			out = append(out, w)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// NoWorkerFor returns a status detail when no live worker builds lang, or
// "" when one does.
func NoWorkerFor(workers []Worker, lang string) string {
	for _, w := range workers {
		if _, ok := w.Languages[lang]; ok {
			return ""
		}
	}
	name := map[string]string{registry.LangR: "R", registry.LangPython: "Python"}[lang]
	if name == "" {
		name = lang
	}
	if len(workers) == 0 {
		return "no worker is running: the build waits in the queue until one starts"
	}
	return fmt.Sprintf("no live worker can build %s packages (%d worker(s) running): the build waits in the queue until one that can starts", name, len(workers))
}

// CapSlots returns how many build slots a worker may run within its
// user-namespace limit (max < 0: unknown, no cap), and an error that says
// why when it had to cap.
func CapSlots(slots, max int) (int, error) {
	if max < 0 || slots*NamespacesPerBuild <= max {
		return slots, nil
	}
	capped := max / NamespacesPerBuild
	if capped < 1 {
		return slots, fmt.Errorf("user.max_user_namespaces is %d: not even one sandboxed build (%d namespaces) fits", max, NamespacesPerBuild)
	}
	return capped, fmt.Errorf("Worker.Concurrency %d needs %d user namespaces but user.max_user_namespaces is %d: using %d slots",
		slots, slots*NamespacesPerBuild, max, capped)
}

// Budget is PPM's user-namespace requirement for the configured builders
// (see apiv1).
type Budget = apiv1.Budget

// NewBudget computes the budget of the builders counted (see
// registry.CountBuildersByKind) on workers.
func NewBudget(builders registry.BuilderCounts, buildConcurrency int, workers []Worker) Budget {
	b := Budget{
		Formula:          "((tag builders × Git.BuildConcurrency) + commit builders) × 2",
		BuildConcurrency: buildConcurrency,
		Warnings:         []string{},
		TagBuilders:      builders.Tags(),
		CommitBuilders:   builders.Commits(),
	}
	b.Required = (b.TagBuilders*buildConcurrency + b.CommitBuilders) * NamespacesPerBuild
	for _, w := range workers {
		if !w.Sandboxed() {
			continue
		}
		b.FleetSlots += w.Slots
		b.FleetNamespaces += w.NamespacesNeeded
		if w.MaxUserNamespaces >= 0 && w.NamespacesNeeded > w.MaxUserNamespaces {
			b.Warnings = append(b.Warnings, fmt.Sprintf("worker %s needs %d user namespaces for %d slots but its host allows %d",
				w.Name, w.NamespacesNeeded, w.Slots, w.MaxUserNamespaces))
		}
	}
	return b
}
