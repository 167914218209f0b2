package registry

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// keyBuilderCounts is a hash "language/trigger" → how many builders there
// are of that kind, so the namespace budget and /metrics read a few
// counts instead of every builder. The scripts that create, edit and
// delete builders keep it in the same step as the builder's record, so it
// cannot drift; a store without it (written before it existed) has it
// counted once, in a script, by the first reader.
const keyBuilderCounts = "pkgfleet:counts:builders"

// countBuilder is Lua that adds by to the count of the builder whose JSON
// is record, while the counts exist (else the first reader counts all).
const countBuilder = `
local function str(v) if type(v) == 'string' then return v end return '' end
local function kind(record)
  local b = cjson.decode(record)
  return str(b.language) .. '/' .. str(b.build_trigger)
end
local function countBuilder(counts, record, by)
  if redis.call('EXISTS', counts) == 0 then return end
  redis.call('HINCRBY', counts, kind(record), by)
end
`

// createBuilder stores a new builder, indexes and counts it: KEYS
// builders, index, counts; ARGV "source/name", record. 0: it exists.
var createBuilder = redis.NewScript(countBuilder + `
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
countBuilder(KEYS[3], ARGV[2], 1)
return 1
`)

// replaceBuilder replaces a builder's record if it is still the one the
// edit started from, and moves it between counts: KEYS builders, counts;
// ARGV "source/name", old record, new record. -1: gone; 0: changed
// meanwhile.
var replaceBuilder = redis.NewScript(countBuilder + `
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return -1 end
if old ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
countBuilder(KEYS[2], old, -1)
countBuilder(KEYS[2], ARGV[3], 1)
return 1
`)

// deleteBuilder removes a builder, its index entry, webhook secret and
// commit claims, and uncounts it: KEYS builders, index, counts, webhook
// secrets, claims; ARGV "source/name". 0: there was none.
var deleteBuilder = redis.NewScript(countBuilder + `
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[5])
countBuilder(KEYS[3], old, -1)
return 1
`)

// readBuilderCounts returns the counts (KEYS[1]), counting the builders
// (KEYS[2]) first when there are none: the one walk of a store written
// before the counts existed.
var readBuilderCounts = redis.NewScript(countBuilder + `
if redis.call('EXISTS', KEYS[1]) == 0 then
  local n = {}
  for _, record in ipairs(redis.call('HVALS', KEYS[2])) do
    local k = kind(record)
    n[k] = (n[k] or 0) + 1
  end
  for k, v in pairs(n) do redis.call('HSET', KEYS[1], k, v) end
end
return redis.call('HGETALL', KEYS[1])
`)

// BuilderCounts is how many builders there are of each {language,
// trigger}.
type BuilderCounts map[[2]string]int

// Tags and Commits split the builders by trigger, as PPM's namespace
// budget does: a builder not following tags follows commits.
func (c BuilderCounts) Tags() int    { return c.trigger(true) }
func (c BuilderCounts) Commits() int { return c.trigger(false) }

func (c BuilderCounts) trigger(tags bool) int {
	n := 0
	for k, v := range c {
		if (k[1] == TriggerTags) == tags {
			n += v
		}
	}
	return n
}

// CountBuildersByKind counts every builder by language and trigger in one
// Redis command, whatever the fleet's size.
func (r *Registry) CountBuildersByKind(ctx context.Context) (BuilderCounts, error) {
	raw, err := readBuilderCounts.Run(ctx, r.rdb, []string{keyBuilderCounts, keyBuilders}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("count git-builders: %w", err)
	}
	out := BuilderCounts{}
	for i := 0; i+1 < len(raw); i += 2 {
		n, err := strconv.Atoi(raw[i+1])
		if err != nil {
			return nil, fmt.Errorf("count git-builders: %s: %w", raw[i], err)
		}
		lang, trigger, _ := strings.Cut(raw[i], "/")
		if n != 0 {
			out[[2]string{lang, trigger}] = n
		}
	}
	return out, nil
}

// keyBuildCounts is a hash status → how many builds are in it, kept by
// the scripts that write build records (createBuild, putBuild, casBuild)
// in the same step, and counted once by the first reader of a store
// written before it existed.
const keyBuildCounts = "pkgfleet:counts:builds"

// countBuild is Lua that moves a build between status counts as its
// record goes from old (false: new build) to record, while the counts
// exist.
//
// It keeps the served keys' copy of the counts (keyServedCounts) in the
// same step: a version of pkgfleet without the served keys keeps only
// the counts, so the two differ once such a version wrote a build.
const countBuild = `
local function statusOf(record)
  local ok, b = pcall(cjson.decode, record)
  if ok and type(b) == 'table' and type(b.status) == 'string' then return b.status end
  return ''
end
local function countStatus(counts, status, by)
  redis.call('HINCRBY', counts, status, by)
  redis.call('HINCRBY', '` + keyServedCounts + `', status, by)
end
local function countBuild(counts, old, record)
  if redis.call('EXISTS', counts) == 0 then return end
  local to = statusOf(record)
  if old then
    local from = statusOf(old)
    if from == to then return end
    countStatus(counts, from, -1)
  end
  countStatus(counts, to, 1)
end
`

// putBuild replaces a build's record if it is still the one the edit
// started from, recounts it, lists it if it finished and moves it in its
// source's served keys (served.go): KEYS build,
// counts, finished; ARGV old, new.
// {1}: written; {0, current}: changed meanwhile (no current: gone).
var putBuild = redis.NewScript(countBuild + noteFinished + servedLua + `
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[2])
countBuild(KEYS[2], cur, ARGV[2])
noteFinished(KEYS[3], cur, ARGV[2])
servedMove(KEYS[1], cur, ARGV[2])
return {1}
`)

// readBuildCounts returns the counts (KEYS[1]), counting every build
// (KEYS[2], ids; ARGV[1] the records' key prefix) first when there are
// none, into the served keys' copy too.
var readBuildCounts = redis.NewScript(countBuild + `
if redis.call('EXISTS', KEYS[1]) == 0 then
  local n = {}
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local raw = redis.call('GET', ARGV[1] .. id)
    if raw then
      local s = statusOf(raw)
      n[s] = (n[s] or 0) + 1
    end
  end
  redis.call('DEL', '` + keyServedCounts + `')
  for k, v in pairs(n) do
    redis.call('HSET', KEYS[1], k, v)
    redis.call('HSET', '` + keyServedCounts + `', k, v)
  end
end
return redis.call('HGETALL', KEYS[1])
`)

// CountBuildsByStatus counts every build by status in one Redis command,
// whatever the number of builds.
func (r *Registry) CountBuildsByStatus(ctx context.Context) (map[string]int, error) {
	raw, err := readBuildCounts.Run(ctx, r.rdb, []string{keyBuildCounts, keyBuilds}, keyBuildPrefix).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("count builds: %w", err)
	}
	out := map[string]int{}
	for i := 0; i+1 < len(raw); i += 2 {
		n, err := strconv.Atoi(raw[i+1])
		if err != nil {
			return nil, fmt.Errorf("count builds: %s: %w", raw[i], err)
		}
		if n != 0 {
			out[raw[i]] = n
		}
	}
	return out, nil
}
