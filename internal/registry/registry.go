package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keys. Everything pkgfleet stores lives under "pkgfleet:"; asynq's
// own keys live under "asynq:".
const (
	keySources  = "pkgfleet:sources"  // hash name → Source JSON
	keyBuilders = "pkgfleet:builders" // hash "source/name" → Builder JSON
	keyBuildSeq = "pkgfleet:build-seq"
	keyBuilds   = "pkgfleet:builds" // zset of all build ids

	keyBuildPrefix = "pkgfleet:build:" // + id: a build's record (JSON)
)

func keyBuild(id int64) string         { return keyBuildPrefix + strconv.FormatInt(id, 10) }
func keyBuildLog(id int64) string      { return keyBuild(id) + ":log" }
func keyBuilderBuilds(k string) string { return "pkgfleet:builder-builds:" + k } // zset of ids
func keyClaims(k string) string        { return "pkgfleet:claims:" + k }         // hash sha → build id

// Registry is the Redis-backed store. It is safe for concurrent use by any
// number of processes.
type Registry struct {
	rdb redis.UniversalClient
	now func() time.Time
	ids highWater // the highest build id this process handed out or read

	filling chan struct{} // held by this process's fill of the served keys (served.go)

	// OnIDJump, when set, hears of each jump of the build-id counter (to
	// log and count it).
	OnIDJump func(IDJump)
	// OnUnreadable, when set, hears of each record a listing left out
	// because it could not be read (to log it), by its Redis key.
	OnUnreadable func(key string, err error)
	// OnServedRebuild, when set, hears that this process began a rebuild
	// of the served keys (served.go), found behind the builds (to log it).
	OnServedRebuild func()
}

// New returns a registry on rdb.
func New(rdb redis.UniversalClient) *Registry {
	return &Registry{rdb: rdb, now: func() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }, filling: make(chan struct{}, 1)}
}

// Ping checks that Redis answers.
func (r *Registry) Ping(ctx context.Context) error { return r.rdb.Ping(ctx).Err() }

// CreateSource stores a new source.
func (r *Registry) CreateSource(ctx context.Context, s Source) (Source, error) {
	if err := ValidateName("source name", s.Name); err != nil {
		return Source{}, err
	}
	if LanguageOf(s.Type) == "" {
		return Source{}, invalid("source type %q is not supported (git for R, git-python for Python)", s.Type)
	}
	if s.Binary && s.Type != TypeGit {
		return Source{}, invalid("binary applies to git (R) sources only: a wheel is already a binary")
	}
	s.CreatedAt = r.now()
	b, _ := json.Marshal(s)
	ok, err := r.rdb.HSetNX(ctx, keySources, s.Name, b).Result()
	if err != nil {
		return Source{}, fmt.Errorf("create source: %w", err)
	}
	if !ok {
		return Source{}, fmt.Errorf("source %q %w", s.Name, ErrExists)
	}
	return s, nil
}

// Source returns one source.
func (r *Registry) Source(ctx context.Context, name string) (Source, error) {
	var s Source
	err := r.getJSON(ctx, keySources, name, &s)
	if errors.Is(err, ErrNotFound) {
		return s, fmt.Errorf("source %q %w", name, ErrNotFound)
	}
	return s, err
}

// Sources lists all sources by name.
func (r *Registry) Sources(ctx context.Context) ([]Source, error) {
	vals, err := r.rdb.HVals(ctx, keySources).Result()
	if err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	out := make([]Source, 0, len(vals))
	for _, v := range vals {
		var s Source
		if err := json.Unmarshal([]byte(v), &s); err != nil {
			return nil, fmt.Errorf("list sources: %w", err)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeleteSource removes a source that has no git-builders left.
func (r *Registry) DeleteSource(ctx context.Context, name string) error {
	if _, err := r.Source(ctx, name); err != nil {
		return err
	}
	builders, err := r.Builders(ctx, name)
	if err != nil {
		return err
	}
	if len(builders) > 0 {
		return fmt.Errorf("source %q still has %d git-builder(s); delete them first: %w", name, len(builders), ErrConflict)
	}
	return r.rdb.HDel(ctx, keySources, name).Err()
}

// CreateBuilder stores a new, already validated builder (see
// Validator.Builder).
func (r *Registry) CreateBuilder(ctx context.Context, b *Builder) error {
	src, err := r.Source(ctx, b.Source)
	if err != nil {
		return err
	}
	b.Language = src.Language()
	b.CreatedAt = r.now()
	b.UpdatedAt = b.CreatedAt
	data, _ := json.Marshal(b)
	ok, err := createBuilder.Run(ctx, r.rdb, []string{keyBuilders, keyBuilderIndex, keyBuilderCounts}, b.Key(), data).Int()
	if err != nil {
		return fmt.Errorf("create git-builder: %w", err)
	}
	if ok == 0 {
		return fmt.Errorf("git-builder %q in source %q %w", b.Name, b.Source, ErrExists)
	}
	return nil
}

// Builder returns one builder.
func (r *Registry) Builder(ctx context.Context, source, name string) (*Builder, error) {
	var b Builder
	if err := r.getJSON(ctx, keyBuilders, source+"/"+name, &b); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("git-builder %q in source %q %w", name, source, ErrNotFound)
		}
		return nil, err
	}
	return &b, nil
}

// Builders lists the builders of one source, or of all sources when source
// is "".
func (r *Registry) Builders(ctx context.Context, source string) ([]*Builder, error) {
	vals, err := r.rdb.HVals(ctx, keyBuilders).Result()
	if err != nil {
		return nil, fmt.Errorf("list git-builders: %w", err)
	}
	var out []*Builder
	for _, v := range vals {
		var b Builder
		if err := json.Unmarshal([]byte(v), &b); err != nil {
			return nil, fmt.Errorf("list git-builders: %w", err)
		}
		if source == "" || b.Source == source {
			out = append(out, &b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}

// keyBuilderIndex is a sorted set of every builder's "source/name", all
// with score 0, so that ZRANGEBYLEX reads one page of builders in name
// order without reading the others.
const keyBuilderIndex = "pkgfleet:builder-index"

// BuildersPage lists at most limit builders of source (of all sources
// when ""), in "source/name" order, starting after the builder key after
// ("" for the first page). next is the key to pass as after for the next
// page, "" after the last.
func (r *Registry) BuildersPage(ctx context.Context, source, after string, limit int) (page []*Builder, next string, err error) {
	if err := r.indexBuilders(ctx); err != nil {
		return nil, "", err
	}
	lo, hi := "-", "+"
	if source != "" {
		// '/' + 1 is '0': every "source/…" key sorts below "source0".
		lo, hi = "["+source+"/", "("+source+"0"
	}
	if after != "" && (source == "" || strings.HasPrefix(after, source+"/")) {
		lo = "(" + after
	}
	keys, err := r.rdb.ZRangeByLex(ctx, keyBuilderIndex, &redis.ZRangeBy{Min: lo, Max: hi, Count: int64(limit) + 1}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list git-builders: %w", err)
	}
	if len(keys) > limit {
		keys, next = keys[:limit], keys[limit-1]
	}
	if len(keys) == 0 {
		return nil, "", nil
	}
	vals, err := r.rdb.HMGet(ctx, keyBuilders, keys...).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list git-builders: %w", err)
	}
	for _, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue // deleted since the index was read
		}
		var b Builder
		if err := json.Unmarshal([]byte(raw), &b); err != nil {
			return nil, "", fmt.Errorf("list git-builders: %w", err)
		}
		page = append(page, &b)
	}
	return page, next, nil
}

// CountBuilders says how many builders source has.
func (r *Registry) CountBuilders(ctx context.Context, source string) (int, error) {
	if err := r.indexBuilders(ctx); err != nil {
		return 0, err
	}
	n, err := r.rdb.ZLexCount(ctx, keyBuilderIndex, "["+source+"/", "("+source+"0").Result()
	if err != nil {
		return 0, fmt.Errorf("count git-builders of %s: %w", source, err)
	}
	return int(n), nil
}

// indexBuilders rebuilds the index when it does not hold as many keys as
// the builders' hash: builders stored before the index existed, or an
// index write lost between the two (create and delete write the hash
// first).
func (r *Registry) indexBuilders(ctx context.Context) error {
	pipe := r.rdb.Pipeline()
	hlen, zcard := pipe.HLen(ctx, keyBuilders), pipe.ZCard(ctx, keyBuilderIndex)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("git-builder index: %w", err)
	}
	if hlen.Val() == zcard.Val() {
		return nil
	}
	keys, err := r.rdb.HKeys(ctx, keyBuilders).Result()
	if err != nil {
		return fmt.Errorf("git-builder index: %w", err)
	}
	_, err = r.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.Del(ctx, keyBuilderIndex)
		members := make([]redis.Z, len(keys))
		for i, k := range keys {
			members[i] = redis.Z{Member: k}
		}
		if len(members) > 0 {
			tx.ZAdd(ctx, keyBuilderIndex, members...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("git-builder index: %w", err)
	}
	return nil
}

// UpdateBuilder applies edit to a builder atomically; edit validates.
func (r *Registry) UpdateBuilder(ctx context.Context, source, name string, edit func(*Builder) error) (*Builder, error) {
	field := source + "/" + name
	raw, err := r.rdb.HGet(ctx, keyBuilders, field).Result()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("git-builder %q in source %q %w", name, source, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("edit git-builder: %w", err)
	}
	var b Builder
	if err := json.Unmarshal([]byte(raw), &b); err != nil {
		return nil, fmt.Errorf("edit git-builder: %w", err)
	}
	if err := edit(&b); err != nil {
		return nil, err
	}
	b.Source, b.Name = source, name // identity never changes
	b.UpdatedAt = r.now()
	data, _ := json.Marshal(&b)
	// Written only over the record edit started from, so a concurrent edit
	// is not lost, and recounted in the same step.
	ok, err := replaceBuilder.Run(ctx, r.rdb, []string{keyBuilders, keyBuilderCounts}, field, raw, data).Int()
	switch {
	case err != nil:
		return nil, fmt.Errorf("edit git-builder: %w", err)
	case ok < 0:
		return nil, fmt.Errorf("git-builder %q in source %q %w", name, source, ErrNotFound)
	case ok == 0:
		return nil, fmt.Errorf("git-builder %q changed meanwhile, try again: %w", name, ErrConflict)
	}
	return &b, nil
}

// DeleteBuilder removes a builder and its commit claims; its builds stay
// listed as history.
func (r *Registry) DeleteBuilder(ctx context.Context, source, name string) error {
	field := source + "/" + name
	keys := []string{keyBuilders, keyBuilderIndex, keyBuilderCounts, keyWebhookSecrets, keyClaims(field)}
	n, err := deleteBuilder.Run(ctx, r.rdb, keys, field).Int()
	if err != nil {
		return fmt.Errorf("delete git-builder: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("git-builder %q in source %q %w", name, source, ErrNotFound)
	}
	return nil
}

// ClaimMode says when CreateBuild may start a new build for a commit that
// already has one.
type ClaimMode int

const (
	// ReuseUnlessFailed returns the commit's existing build unless it failed
	// or was canceled (polls, webhooks, run).
	ReuseUnlessFailed ClaimMode = iota
	// ReuseActive returns the existing build only while it is still queued,
	// waiting or running (rerun: build again).
	ReuseActive
)

// createBuild claims a commit for a new build, or returns the build that
// already has it, in one script: KEYS claims, build-seq, builds,
// builder-builds, build counts, build-seq's run, the source's served
// "all" and the served keys' sources (served.go); ARGV sha, the build
// keys' prefix, the new record's JSON after its leading `{"id":0,`, the
// caller's high-water mark of ids, IDGap, the source, then the statuses
// in which an existing build is reused.
// {0, record}: reused; {1, id, jump, counter before}: created (see
// nextBuildID).
var createBuild = redis.NewScript(countBuild + `
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then
  local raw = redis.call('GET', ARGV[2] .. id)
  if raw then
    local ok, prev = pcall(cjson.decode, raw)
    if ok and type(prev) == 'table' then
      for i = 7, #ARGV do
        if prev.status == ARGV[i] then return {0, raw} end
      end
    end
  end
end
` + nextBuildID + `
local record = '{"id":' .. id .. ',' .. ARGV[3]
redis.call('SET', ARGV[2] .. id, record)
countBuild(KEYS[5], false, record)
redis.call('HSET', KEYS[1], ARGV[1], id)
redis.call('ZADD', KEYS[3], id, id)
redis.call('ZADD', KEYS[4], id, id)
if redis.call('ZADD', KEYS[7], id, id) == 1 then redis.call('SADD', KEYS[8], ARGV[6]) end
return {1, id, jump, before}
`)

// statuses lists every build status, for the claim script's reuse test.
var statuses = []string{StatusQueued, StatusWaiting, StatusRunning, StatusSucceeded, StatusFailed, StatusCanceled}

// CreateBuild records a new build of b.SHA for its builder, unless the
// commit already has a build that mode says to reuse; then that build is
// returned with created == false. The claim is one script, atomic across
// processes.
func (r *Registry) CreateBuild(ctx context.Context, b *Build, mode ClaimMode) (out *Build, created bool, err error) {
	builderKey := b.Source + "/" + b.Builder
	nb := *b
	nb.ID = 0
	nb.Status = StatusQueued
	nb.CreatedAt = r.now()
	if nb.Artifacts == nil {
		nb.Artifacts = []Artifact{}
	}
	data, _ := json.Marshal(&nb)
	// The script puts the id it takes first; apiv1.Build's JSON starts
	// with it.
	const idZero = `{"id":0,`
	if !bytes.HasPrefix(data, []byte(idZero)) {
		return nil, false, fmt.Errorf("create build: a record's JSON must start with %s", idZero)
	}
	args := []any{b.SHA, keyBuildPrefix, data[len(idZero):], r.ids.get(), IDGap, b.Source}
	for _, s := range statuses {
		if reuse(&Build{Status: s}, mode) {
			args = append(args, s)
		}
	}
	keys := []string{keyClaims(builderKey), keyBuildSeq, keyBuilds, keyBuilderBuilds(builderKey), keyBuildCounts, keyBuildSeqRun,
		keyServed(b.Source, "all"), keyServedSources}
	res, err := createBuild.Run(ctx, r.rdb, keys, args...).Slice()
	if err != nil {
		return nil, false, fmt.Errorf("create build: %w", err)
	}
	if res[0].(int64) == 0 {
		var prev Build
		if err := json.Unmarshal([]byte(res[1].(string)), &prev); err != nil {
			return nil, false, fmt.Errorf("create build: %w", err)
		}
		r.ids.see(prev.ID)
		return &prev, false, nil
	}
	nb.ID = res[1].(int64)
	if jump := res[2].(int64); jump != 0 && r.OnIDJump != nil {
		r.OnIDJump(IDJump{Reason: idJumpReasons[jump], Counter: res[3].(int64), HighMark: r.ids.get(), ID: nb.ID})
	}
	r.ids.see(nb.ID)
	return &nb, true, nil
}

func reuse(prev *Build, mode ClaimMode) bool {
	if !Terminal(prev.Status) {
		return true
	}
	return mode == ReuseUnlessFailed && prev.Status == StatusSucceeded
}

// Build returns one build.
func (r *Registry) Build(ctx context.Context, id int64) (*Build, error) {
	raw, err := r.rdb.Get(ctx, keyBuild(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("build %d %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get build %d: %w", id, err)
	}
	var b Build
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("get build %d: %w", id, err)
	}
	r.ids.see(id)
	return &b, nil
}

// UpdateBuild applies edit to a build atomically. If edit returns an error
// nothing is written.
func (r *Registry) UpdateBuild(ctx context.Context, id int64, edit func(*Build) error) (*Build, error) {
	key := keyBuild(id)
	raw, err := r.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("build %d %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get build %d: %w", id, err)
	}
	for range 20 {
		var b Build
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, fmt.Errorf("get build %d: %w", id, err)
		}
		if err := edit(&b); err != nil {
			return nil, err
		}
		b.ID = id
		data, _ := json.Marshal(&b)
		// Written only over the record edit started from, and recounted
		// by status in the same step.
		res, err := putBuild.Run(ctx, r.rdb, []string{key, keyBuildCounts, KeyFinished}, raw, data).Slice()
		if err != nil {
			return nil, fmt.Errorf("update build %d: %w", id, err)
		}
		if res[0].(int64) == 1 {
			return &b, nil
		}
		cur, ok := res[1].(string)
		if !ok {
			return nil, fmt.Errorf("build %d %w", id, ErrNotFound)
		}
		raw = []byte(cur)
	}
	return nil, fmt.Errorf("build %d changed too often meanwhile: %w", id, ErrConflict)
}

// Filter selects builds to list.
type Filter struct {
	Source  string
	Builder string
	Status  string
	Limit   int // default 100
}

// Builds lists builds, newest first.
func (r *Registry) Builds(ctx context.Context, f Filter) ([]*Build, error) {
	if f.Source != "" && f.Builder == "" {
		// A source's builds are listed in its served keys (served.go),
		// while those are current; else every build is read.
		listed, err := r.sourceListed(ctx)
		if err != nil {
			return nil, err
		}
		if listed {
			return r.listBuilds(ctx, keyServed(f.Source, "all"), f)
		}
	}
	return r.scanBuilds(ctx, f)
}

// scanBuilds is Builds from the list of every build, or of its builder's
// when f names one.
func (r *Registry) scanBuilds(ctx context.Context, f Filter) ([]*Build, error) {
	key := keyBuilds
	if f.Source != "" && f.Builder != "" {
		key = keyBuilderBuilds(f.Source + "/" + f.Builder)
	}
	return r.listBuilds(ctx, key, f)
}

// listBuilds is Builds from the sorted set of build ids key, newest first.
func (r *Registry) listBuilds(ctx context.Context, key string, f Filter) ([]*Build, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var out []*Build
	const page = 200
	for start := int64(0); len(out) < f.Limit; start += page {
		ids, vals, err := r.buildsPage(ctx, key, start, page)
		if err != nil {
			return nil, fmt.Errorf("list builds: %w", err)
		}
		if len(vals) == 0 {
			break
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // gone since the set was read
			}
			var b Build
			if err := json.Unmarshal([]byte(s), &b); err != nil {
				// One unreadable record (written by hand, or by a
				// broken release) is left out, said, and does not take
				// the whole listing down with it.
				r.unreadable(keyBuild(ids[i]), err)
				continue
			}
			if (f.Source != "" && b.Source != f.Source) || (f.Builder != "" && b.Builder != f.Builder) ||
				(f.Status != "" && b.Status != f.Status) {
				continue
			}
			r.ids.see(b.ID)
			out = append(out, &b)
			if len(out) == f.Limit {
				break
			}
		}
	}
	return out, nil
}

// buildsPage reads n build records of the sorted set key, newest first
// from position start, in one MGET, with their ids; a record gone since is
// nil. An empty result means the set has no more.
func (r *Registry) buildsPage(ctx context.Context, key string, start, n int64) ([]int64, []any, error) {
	members, err := r.rdb.ZRevRange(ctx, key, start, start+n-1).Result()
	if err != nil || len(members) == 0 {
		return nil, nil, err
	}
	ids := make([]int64, len(members))
	keys := make([]string, len(members))
	for i, m := range members {
		ids[i], _ = strconv.ParseInt(m, 10, 64)
		keys[i] = keyBuild(ids[i])
	}
	vals, err := r.rdb.MGet(ctx, keys...).Result()
	return ids, vals, err
}

// unreadable tells OnUnreadable of a record a listing left out.
func (r *Registry) unreadable(key string, err error) {
	if r.OnUnreadable != nil {
		r.OnUnreadable(key, err)
	}
}

// TruncationMark ends a log that reached its cap.
const TruncationMark = "\n[pkgfleet: log truncated here: it reached the %s limit (Git.BuildLogSize); later output was dropped]\n"

// cappedAppend defines append_capped(key, s, cap, mark) for a script: it
// appends s to key up to cap bytes, then mark once.
const cappedAppend = `
local function append_capped(key, s, cap, mark)
  local len = redis.call('STRLEN', key)
  cap = tonumber(cap)
  if len >= cap then return len end
  if len + #s > cap then
    s = string.sub(s, 1, cap - len) .. mark
  end
  return redis.call('APPEND', key, s)
end
`

// appendLog: KEYS log; ARGV text, cap, mark.
var appendLog = redis.NewScript(cappedAppend + `
return append_capped(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
`)

// AppendLog adds output to a build's log, keeping at most limit bytes plus
// a visible truncation mark.
func (r *Registry) AppendLog(ctx context.Context, id int64, p []byte, limit int64, limitName string) error {
	if len(p) == 0 {
		return nil
	}
	mark := fmt.Sprintf(TruncationMark, limitName)
	return appendLog.Run(ctx, r.rdb, []string{keyBuildLog(id)}, p, limit, mark).Err()
}

// Log returns a build's log from byte offset on.
func (r *Registry) Log(ctx context.Context, id int64, offset int64) ([]byte, error) {
	b, err := r.rdb.GetRange(ctx, keyBuildLog(id), offset, -1).Bytes()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("build %d log: %w", id, err)
	}
	return b, nil
}

func (r *Registry) getJSON(ctx context.Context, key, field string, v any) error {
	raw, err := r.rdb.HGet(ctx, key, field).Bytes()
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return json.Unmarshal(raw, v)
}

// keyWebhookSecrets is a hash "source/name" → webhook secret, kept apart
// from the builder JSON so that no listing or log can include it.
const keyWebhookSecrets = "pkgfleet:webhook-secrets"

// SetWebhookSecret stores (or, when secret is "", removes) a builder's
// webhook secret. The caller keeps Builder.WebhookSecretSet in step.
func (r *Registry) SetWebhookSecret(ctx context.Context, source, name, secret string) error {
	if secret == "" {
		return r.rdb.HDel(ctx, keyWebhookSecrets, source+"/"+name).Err()
	}
	return r.rdb.HSet(ctx, keyWebhookSecrets, source+"/"+name, secret).Err()
}

// WebhookSecret returns one builder's stored webhook secret, "" when it
// has none (or there is no such builder): a webhook names its builder, so
// checking it reads one field, never every builder's.
func (r *Registry) WebhookSecret(ctx context.Context, source, name string) (string, error) {
	v, err := r.rdb.HGet(ctx, keyWebhookSecrets, source+"/"+name).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("webhook secret of %s/%s: %w", source, name, err)
	}
	return v, nil
}

// FirstDelivery remembers a webhook delivery id of a builder for window
// and says whether it is the first time the id is seen in that window
// (SET NX with a TTL, so it holds across API replicas). Forget undoes it.
func (r *Registry) FirstDelivery(ctx context.Context, source, name, id string, window time.Duration) (bool, error) {
	ok, err := r.rdb.SetNX(ctx, keyDelivery(source, name, id), 1, window).Result()
	if err != nil {
		return false, fmt.Errorf("webhook delivery of %s/%s: %w", source, name, err)
	}
	return ok, nil
}

// ForgetDelivery lets a delivery id be used again (its poll request could
// not be stored, so the sender's retry must not be refused).
func (r *Registry) ForgetDelivery(ctx context.Context, source, name, id string) error {
	return r.rdb.Del(ctx, keyDelivery(source, name, id)).Err()
}

// keyDelivery hashes the sender's id so that the key's size is bounded
// whatever the header holds.
func keyDelivery(source, name, id string) string {
	sum := sha256.Sum256([]byte(id))
	return "pkgfleet:webhook-delivery:" + source + "/" + name + ":" + hex.EncodeToString(sum[:16])
}
