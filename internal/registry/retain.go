package registry

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// What retention reads and drops (internal/retention decides which).

// BuildsAfter returns at most n build records with ids above after,
// oldest first, each as read (for DropBuilds).
func (r *Registry) BuildsAfter(ctx context.Context, after int64, n int) ([]Record, error) {
	ids, err := r.rdb.ZRangeByScore(ctx, keyBuilds, &redis.ZRangeBy{Min: "(" + strconv.FormatInt(after, 10), Max: "+inf", Count: int64(n)}).Result()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		n, _ := strconv.ParseInt(id, 10, 64)
		keys[i] = keyBuild(n)
	}
	vals, err := r.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	out := make([]Record, 0, len(vals))
	for _, v := range vals {
		if b, ok := decodeBuild(v); ok {
			out = append(out, Record{Build: b, raw: v.(string)})
		}
	}
	return out, nil
}

// NewestOf returns the ids of the newest n builds of each builder
// ("source/name"), in one round trip.
func (r *Registry) NewestOf(ctx context.Context, builders []string, n int) (map[string][]int64, error) {
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(builders))
	for i, k := range builders {
		cmds[i] = pipe.ZRevRange(ctx, keyBuilderBuilds(k), 0, int64(n)-1)
	}
	if _, err := pipe.Exec(ctx); err != nil && len(builders) > 0 {
		return nil, fmt.Errorf("newest builds: %w", err)
	}
	out := make(map[string][]int64, len(builders))
	for i, k := range builders {
		for _, id := range cmds[i].Val() {
			v, _ := strconv.ParseInt(id, 10, 64)
			out[k] = append(out[k], v)
		}
	}
	return out, nil
}

// dropBuilds removes builds whose records are still as read: KEYS builds,
// build counts; ARGV the build keys' prefix, the builder-builds prefix,
// the claims prefix, then per build its id, record, builder key and sha.
// Each goes with its log, its attempt hash, its place in the listings,
// its commit's claim (while the claim names it) and its status count.
// It returns the ids dropped.
var dropBuilds = redis.NewScript(countBuild + `
local dropped = {}
local counted = redis.call('EXISTS', KEYS[2]) == 1
for i = 4, #ARGV, 4 do
  local id, raw, bk, sha = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  local key = ARGV[1] .. id
  if redis.call('GET', key) == raw then
    redis.call('DEL', key, key .. ':log', key .. ':attempt')
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', ARGV[2] .. bk, id)
    if redis.call('HGET', ARGV[3] .. bk, sha) == id then redis.call('HDEL', ARGV[3] .. bk, sha) end
    if counted then redis.call('HINCRBY', KEYS[2], statusOf(raw), -1) end
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
	vals, err := r.buildsPage(ctx, keyBuilds, 0, int64(4*sample))
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
