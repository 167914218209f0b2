package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// What retention reads and drops (internal/retention decides which).

// summary is what BuildSummaries decodes of a record: what retention
// decides on, not the phases, fetches, warnings or details.
type summary struct {
	ID           int64      `json:"id"`
	Source       string     `json:"source"`
	Builder      string     `json:"builder"`
	Status       string     `json:"status"`
	Package      string     `json:"package"`
	Version      string     `json:"version"`
	Artifacts    []Artifact `json:"artifacts"`
	CreatedAt    time.Time  `json:"created_at"`
	FinishedAt   *time.Time `json:"finished_at"`
	AttemptToken int64      `json:"attempt_token"`
	Log          *StoredLog `json:"log"`
}

// BuildSummaries returns the builds with the n ids above after, oldest
// first, and the last of those ids (0: there were none) to pass as after
// for the next ones. Each has only its identity, status, package,
// version, artifacts, times, attempt token and stored log: a walk of
// every build decodes no more.
func (r *Registry) BuildSummaries(ctx context.Context, after int64, n int) (builds []*Build, next int64, err error) {
	ids, err := r.rdb.ZRangeByScore(ctx, keyBuilds, &redis.ZRangeBy{Min: "(" + strconv.FormatInt(after, 10), Max: "+inf", Count: int64(n)}).Result()
	if err != nil || len(ids) == 0 {
		return nil, 0, err
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		next, _ = strconv.ParseInt(id, 10, 64)
		keys[i] = keyBuild(next)
	}
	vals, err := r.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("list builds: %w", err)
	}
	for _, v := range vals {
		raw, ok := v.(string)
		var s summary
		if !ok || json.Unmarshal([]byte(raw), &s) != nil {
			continue
		}
		builds = append(builds, &Build{ID: s.ID, Source: s.Source, Builder: s.Builder, Status: s.Status, Package: s.Package,
			Version: s.Version, Artifacts: s.Artifacts, CreatedAt: s.CreatedAt, FinishedAt: s.FinishedAt, AttemptToken: s.AttemptToken, Log: s.Log})
	}
	return builds, next, nil
}

// Records reads the builds ids as they are now (those that exist), for
// DropBuilds.
func (r *Registry) Records(ctx context.Context, ids []int64) ([]Record, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = keyBuild(id)
	}
	vals, err := r.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("read builds: %w", err)
	}
	return records(vals), nil
}

func records(vals []any) []Record {
	out := make([]Record, 0, len(vals))
	for _, v := range vals {
		if b, ok := decodeBuild(v); ok {
			out = append(out, Record{Build: b, raw: v.(string)})
		}
	}
	return out
}

// dropBuilds removes builds whose records are still as read: KEYS builds,
// build counts; ARGV the build keys' prefix, the builder-builds prefix,
// the claims prefix, then per build its id, record, builder key and sha.
// Each goes with its log, its attempt hash, its place in the listings
// and its source's served keys (its "all" among them), its commit's claim (while the claim names
// it) and its status count.
// It returns the ids dropped.
var dropBuilds = redis.NewScript(countBuild + servedLua + `
local dropped = {}
local counted = redis.call('EXISTS', KEYS[2]) == 1
for i = 4, #ARGV, 4 do
  local id, raw, bk, sha = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  local key = ARGV[1] .. id
  if redis.call('GET', key) == raw then
    redis.call('DEL', key, key .. ':log', key .. ':attempt')
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', ARGV[2] .. bk, id)
    redis.call('ZREM', skey(string.match(bk, '^[^/]*'), 'all'), id)
    if redis.call('HGET', ARGV[3] .. bk, sha) == id then redis.call('HDEL', ARGV[3] .. bk, sha) end
    if counted then countStatus(KEYS[2], statusOf(raw), -1) end
    servedMove(key, raw, false)
    dropped[#dropped + 1] = id
  end
end
return dropped
`)

// DropBuilds removes the builds of recs from Redis, each only while its
// record is as read (a build that changed meanwhile stays), and returns
// those it removed. Their files in the artifact store are the caller's
// to remove, after this: a file no record names is an orphan the sweep
// can remove, while a record naming a removed file would be a lie.
func (r *Registry) DropBuilds(ctx context.Context, recs []Record) ([]*Build, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	args := []any{keyBuildPrefix, keyBuilderBuilds(""), keyClaims("")}
	byID := make(map[int64]*Build, len(recs))
	for _, rec := range recs {
		b := rec.Build
		args = append(args, b.ID, rec.raw, b.Source+"/"+b.Builder, b.SHA)
		byID[b.ID] = b
	}
	ids, err := dropBuilds.Run(ctx, r.rdb, []string{keyBuilds, keyBuildCounts}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("drop builds: %w", err)
	}
	out := make([]*Build, len(ids))
	for i, id := range ids {
		out[i] = byID[id]
	}
	return out, nil
}

// BytesPerBuild measures what one finished build costs in Redis's
// memory: MEMORY USAGE of the keys of each of the newest (at most)
// sample finished builds (record, log, attempt), averaged; ok is false
// when there is no finished build to measure. The builds' entries in the
// listings and claims (a few sorted-set and hash members, about 100
// bytes) are left out: MEMORY USAGE can only measure whole keys.
func (r *Registry) BytesPerBuild(ctx context.Context, sample int) (perBuild float64, ok bool, err error) {
	_, vals, err := r.buildsPage(ctx, keyBuilds, 0, int64(4*sample))
	if err != nil {
		return 0, false, fmt.Errorf("measure builds: %w", err)
	}
	var ids []int64
	for _, v := range vals {
		if b, ok := decodeBuild(v); ok && Terminal(b.Status) && len(ids) < sample {
			ids = append(ids, b.ID)
		}
	}
	if len(ids) == 0 {
		return 0, false, nil
	}
	pipe := r.rdb.Pipeline()
	var cmds []*redis.IntCmd
	for _, id := range ids {
		for _, k := range []string{keyBuild(id), keyBuildLog(id), keyAttempt(id)} {
			cmds = append(cmds, pipe.MemoryUsage(ctx, k, 0))
		}
	}
	_, _ = pipe.Exec(ctx) // a missing key is redis.Nil: it costs nothing
	var total int64
	for _, c := range cmds {
		if err := c.Err(); err != nil && err != redis.Nil {
			return 0, false, fmt.Errorf("measure builds: %w", err)
		}
		total += c.Val()
	}
	return float64(total) / float64(len(ids)), true, nil
}
