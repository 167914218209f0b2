package registry

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// What the index can serve of a source, kept per source so that a listing
// reads what its source serves, not every build in Redis.
//
// The index (internal/index) serves, per package version, the newest
// successful build that made a package; PPM's binary layout also the
// newest build of the version with a source tarball, and, per binary
// (platform, R x.y, file name), the newest build of the version with it.
// Each of those is a slot, and the newest build in a slot is its top: a
// listing picks only tops, so a source's tops hold everything it can pick,
// whatever the order in which builds finished. Of a source, Redis keeps
//
//   - keyServed(s, "succeeded"): a sorted set of the ids of its
//     successful builds, scored by id, for the bound on how many of the
//     newest a listing considers;
//   - keyServed(s, "made"): a sorted set of the successful builds that
//     made a package, one member "<package><version><id, 20 digits>" each
//     (strings length-prefixed), all scored 0, so that one version's are a
//     lexical range, newest last: where a slot finds its next top when its
//     top goes;
//   - keyServed(s, "tops"): a hash slot → the id of its top;
//   - keyServed(s, "all"): a sorted set of the ids of all its builds,
//     whatever their status, scored by id, for the builds listing of a
//     source (Builds with a Source and no Builder): createBuild adds a
//     build, dropBuilds removes it, a source never changes.
//
// The scripts that write build records (putBuild, casBuild) and the one
// that drops them (dropBuilds) move a build in and out in the same step
// as its record changes (createBuild writes a queued record and nameLog
// only names the stored log: neither moves one); a store written before
// these keys existed is filled once, a batch at a time, by the first
// listing (fillServed). Deleting a source or builder keeps its builds, so
// it keeps them here too, as the listings did when they read every build.
//
// A pkgfleet without these keys (a worker or API replica not yet upgraded
// in a rolling upgrade, or all of them after a rollback) writes builds
// without them. Each listing checks, in the script that reads, that the
// build counts, which every version keeps, still equal the copy the
// scripts here keep in step with them (keyServedCounts), and that no top's
// record is gone; if not, the keys are emptied and filled again, a new
// generation, at most once in rebuildPause (reading every build
// meanwhile). The check misses only such a version's writes that cancel
// out in every status count before a listing looks (a build created,
// run and made to succeed, and another successful one dropped, with no
// listing between).
//
// The slots are index's rule written again in Lua (the registry cannot
// import the index): internal/index's
// TestListingsOfServableBuildsEqualTheFullScan holds the two in step.

const keyServedPrefix = "pkgfleet:served:"

// keyServed is one of a source's keys; names never hold ':' (ValidateName).
func keyServed(source, kind string) string { return keyServedPrefix + source + ":" + kind }

// The keys about all sources' served keys.
const (
	// keyServedSources is a set of the sources that have served keys.
	keyServedSources = keyServedPrefix + "sources"
	// keyServedCounts is a copy of the build counts (keyBuildCounts)
	// taken when the served keys were emptied, which the scripts that
	// keep the served keys keep in step with the counts (countBuild).
	// Every version of pkgfleet keeps the counts, so a difference says
	// that a version without the served keys (a worker or API replica not
	// yet upgraded, or after a rollback) wrote builds they missed.
	keyServedCounts = keyServedPrefix + "counts"
	// keyServedGen is the generation of the served keys: a rebuild
	// empties them and takes the next (keyServedEpoch, never deleted).
	keyServedGen   = keyServedPrefix + "gen"
	keyServedEpoch = keyServedPrefix + "epoch"
	// keyServedFilled holds the generation whose fill walked every build.
	keyServedFilled = keyServedPrefix + "filled"
	// keyServedRebuilt is set for rebuildPause after a rebuild began.
	keyServedRebuilt = keyServedPrefix + "rebuilt"
)

// rebuildPause is the least time between rebuilds of the served keys:
// while a version without them still writes (a rolling upgrade), every
// listing would find them behind; until the pause ends they read every
// build instead, as before the served keys.
const rebuildPause = 5 * time.Minute

// servedLua defines servedMove(key, old, record) for the record-writing
// scripts: it takes the build whose record (at key) was old (false:
// none) out of its source's served keys and puts it back as record
// (false: dropped).
var servedLua = `
local function sstr(v) if type(v) == 'string' then return v end return '' end
local function enc(s) return #s .. ':' .. s end
local function pad(id) return string.format('%020.0f', id) end
local function skey(source, kind) return '` + keyServedPrefix + `' .. source .. ':' .. kind end
local function idOf(key) return tonumber(string.sub(key, ` + fmt.Sprint(len(keyBuildPrefix)+1) + `)) end
-- servedOf is the decoded record of build id when it is successful (as
-- the build counts' statusOf says), else nil.
local function servedOf(id, raw)
  if not raw or not string.find(raw, 'succeeded', 1, true) then return nil end
  local ok, b = pcall(cjson.decode, raw)
  if not ok or type(b) ~= 'table' or b.status ~= 'succeeded' then return nil end
  b.id, b.source = id, sstr(b.source)
  return b
end
-- version is the build's "<package><version>", nil when it made no package
-- (index.made).
local function version(b)
  local p, v = sstr(b.package), sstr(b.version)
  if p == '' or v == '' or type(b.artifacts) ~= 'table' or #b.artifacts == 0 then return nil end
  return enc(p) .. enc(v)
end
-- slots lists the slots the build is in, each once, in a fixed order.
local function slots(b)
  local pv = version(b)
  if not pv then return {} end
  local out, seen, src = {pv .. 'v'}, {}, false
  for _, a in ipairs(b.artifacts) do
    if type(a) == 'table' then
      if a.kind == 'source' then src = true end
      if a.kind == 'binary' then
        local f = pv .. 'b' .. enc(sstr(a.platform)) .. enc(sstr(a.r_version)) .. enc(sstr(a.file))
        if not seen[f] then seen[f] = true; out[#out + 1] = f end
      end
    end
  end
  if src then out[#out + 1] = pv .. 's' end
  table.sort(out)
  return out
end
local function sameSlots(a, b)
  if a.source ~= b.source then return false end
  local x, y = slots(a), slots(b)
  if #x ~= #y then return false end
  for i = 1, #x do if x[i] ~= y[i] then return false end end
  return true
end
local function servedAdd(b)
  local id = string.format('%.0f', b.id)
  if redis.call('ZADD', skey(b.source, 'succeeded'), b.id, id) == 1 then
    redis.call('SADD', '` + keyServedSources + `', b.source)
  end
  local pv = version(b)
  if not pv then return end
  redis.call('ZADD', skey(b.source, 'made'), 0, pv .. pad(b.id))
  local tops = skey(b.source, 'tops')
  for _, f in ipairs(slots(b)) do
    local cur = redis.call('HGET', tops, f)
    if not cur or tonumber(cur) < b.id then redis.call('HSET', tops, f, id) end
  end
end
-- servedRemove takes the build out; each slot it topped gets the newest
-- of the version's other builds in it, or goes.
local function servedRemove(b)
  local id = string.format('%.0f', b.id)
  redis.call('ZREM', skey(b.source, 'succeeded'), id)
  local pv = version(b)
  if not pv then return end
  local made, tops = skey(b.source, 'made'), skey(b.source, 'tops')
  redis.call('ZREM', made, pv .. pad(b.id))
  local lost, n = {}, 0
  for _, f in ipairs(slots(b)) do
    if redis.call('HGET', tops, f) == id then lost[f] = true; n = n + 1 end
  end
  local off = 0
  while n > 0 do
    local page = redis.call('ZREVRANGEBYLEX', made, '(' .. pv .. '\255', '[' .. pv, 'LIMIT', off, 50)
    if #page == 0 then break end
    off = off + #page
    for _, m in ipairs(page) do
      local cid = tonumber(string.sub(m, #pv + 1))
      local c = servedOf(cid, redis.call('GET', '` + keyBuildPrefix + `' .. string.format('%.0f', cid)))
      if c then
        for _, f in ipairs(slots(c)) do
          if lost[f] then
            redis.call('HSET', tops, f, string.format('%.0f', cid))
            lost[f] = nil; n = n - 1
          end
        end
      end
      if n == 0 then break end
    end
  end
  for f in pairs(lost) do redis.call('HDEL', tops, f) end
end
-- servedList lists build id among all of its source's builds.
local function servedList(source, id)
  if redis.call('ZADD', skey(source, 'all'), tonumber(id), id) == 1 then
    redis.call('SADD', '` + keyServedSources + `', source)
  end
end
local function servedMove(key, old, record)
  local id = idOf(key)
  local o, r = servedOf(id, old), servedOf(id, record)
  if not o and not r then return end
  if o and r and sameSlots(o, r) then return end
  if o then servedRemove(o) end
  if r then servedAdd(r) end
end
`

// wipeServed empties the served keys and starts their next generation,
// which it returns, with a copy of the build counts as they are now:
// KEYS sources, served counts, filled, gen, epoch, rebuilt, build counts;
// ARGV "first" or "rebuild", the pause in ms. The first generation only
// when there is none yet (else the current one is returned); a rebuild
// only when none began within the pause (else 0).
var wipeServed = redis.NewScript(`
if ARGV[1] == 'first' then
  local gen = redis.call('GET', KEYS[4])
  if gen then return tonumber(gen) end
elseif redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[2]) == false then
  return 0
end
for _, s in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  for _, kind in ipairs({'succeeded', 'made', 'tops', 'all'}) do
    redis.call('UNLINK', '` + keyServedPrefix + `' .. s .. ':' .. kind)
  end
end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3])
local counts = redis.call('HGETALL', KEYS[7])
if #counts > 0 then redis.call('HSET', KEYS[2], unpack(counts)) end
local gen = redis.call('INCR', KEYS[5])
redis.call('SET', KEYS[4], gen)
return gen
`)

// fillServed adds the builds with the n ids above after (in the sorted set
// of every build, KEYS[2]) to the served keys of generation gen (KEYS[1]
// must still hold it, else -1: a rebuild began since), reading each
// record in the script, so that a build that changed or went since the
// caller began is taken as it is now; it returns the last id read, and
// with none left it marks gen filled (KEYS[3]). Adding is idempotent, so
// any number of processes may fill at once: a slot's top is the newest
// build added to it whichever added it first, and a build's later writes
// move it whether it was added yet or not. ARGV gen, after, n.
var fillServed = redis.NewScript(servedLua + `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[2], '+inf', 'LIMIT', 0, tonumber(ARGV[3]))
if #ids == 0 then
  redis.call('SET', KEYS[3], ARGV[1])
  return 0
end
for _, id in ipairs(ids) do
  local raw = redis.call('GET', '` + keyBuildPrefix + `' .. id)
  local b = servedOf(tonumber(id), raw)
  if b then servedAdd(b) end
  if raw then
    local ok, rec = pcall(cjson.decode, raw)
    if ok and type(rec) == 'table' then servedList(sstr(rec.source), id) end
  end
end
return tonumber(ids[#ids])
`)

// readServed returns, KEYS gen, filled, build counts, served counts, the
// source's succeeded, tops: {0} while there is no generation or it is
// not filled; {2} when the served keys are behind the builds: the
// build counts are not their copy (a version without the served keys
// wrote), or a top's record is gone (deleted behind the scripts' back);
// else {1, records...}: the records of the tops of the source's slots
// among its newest ARGV[1] successful builds, read in one step. A slot
// whose top is older than those has no build among them: its top is the
// newest it has.
var readServed = redis.NewScript(servedStateLua + `
local state = servedState()
if state ~= 1 then return {state} end
local newest = tonumber(ARGV[1])
local cutoff = 0
if redis.call('ZCARD', KEYS[5]) > newest then
  local at = redis.call('ZREVRANGE', KEYS[5], newest - 1, newest - 1, 'WITHSCORES')
  cutoff = tonumber(at[2])
end
local out, seen, keys, gone = {1}, {}, {}, false
local function read()
  if #keys == 0 then return end
  for _, raw in ipairs(redis.call('MGET', unpack(keys))) do
    if raw then out[#out + 1] = raw else gone = true end
  end
  keys = {}
end
for _, id in ipairs(redis.call('HVALS', KEYS[6])) do
  if not seen[id] and tonumber(id) >= cutoff then
    seen[id] = true
    keys[#keys + 1] = '` + keyBuildPrefix + `' .. id
    if #keys == 500 then read() end
  end
end
read()
if gone then return {2} end
return out
`)

// servedStateLua defines servedState() for a script whose KEYS begin
// gen, filled, build counts, served counts: 0 while there is no
// generation or it is not filled, 2 when the build counts are not the
// served keys' copy of them (a version without the served keys wrote),
// else 1.
const servedStateLua = `
local function servedState()
  local gen = redis.call('GET', KEYS[1])
  if not gen or redis.call('GET', KEYS[2]) ~= gen then return 0 end
  local counts, copy = redis.call('HGETALL', KEYS[3]), {}
  local c = redis.call('HGETALL', KEYS[4])
  for i = 1, #c, 2 do copy[c[i]] = tonumber(c[i + 1]) end
  for i = 1, #counts, 2 do
    local n = tonumber(counts[i + 1])
    if n ~= (copy[counts[i]] or 0) then return 2 end
    copy[counts[i]] = nil
  end
  for _, n in pairs(copy) do if n ~= 0 then return 2 end end
  return 1
end
`

var checkServed = redis.NewScript(servedStateLua + `return servedState()`)

var stateKeys = []string{keyServedGen, keyServedFilled, keyBuildCounts, keyServedCounts}

// sourceListed reports whether keyServed(source, "all") lists every build
// of the source now, filling the served keys first when they were never
// filled, or rebuilding them when they are behind (false when a rebuild
// began within rebuildPause: the caller reads every build instead).
func (r *Registry) sourceListed(ctx context.Context) (bool, error) {
	for range 3 {
		state, err := checkServed.Run(ctx, r.rdb, stateKeys).Int64()
		if err != nil {
			return false, fmt.Errorf("list builds: %w", err)
		}
		if ok, err := r.repairServed(ctx, state); err != nil || !ok {
			return false, err
		}
		if state == 1 {
			return true, nil
		}
	}
	return false, nil
}

// PrepareListings fills the served keys when they were never filled (a
// store written before them) or rebuilds them when they are behind the
// builds, as the first listing would, so that an API can do it as it
// starts instead of in a user's request: seconds for a million builds.
// prepared says whether there was anything to do.
func (r *Registry) PrepareListings(ctx context.Context) (prepared bool, err error) {
	state, err := checkServed.Run(ctx, r.rdb, stateKeys).Int64()
	if err != nil || state == 1 {
		return false, err
	}
	_, err = r.repairServed(ctx, state)
	return true, err
}

// repairServed acts on a state servedState reported: 0 fills the served
// keys, 2 rebuilds them, unless a rebuild began within rebuildPause (ok
// false: read every build meanwhile).
func (r *Registry) repairServed(ctx context.Context, state int64) (ok bool, err error) {
	switch state {
	case 0:
		return true, r.fillServed(ctx)
	case 2:
		return r.rebuildServed(ctx)
	}
	return true, nil
}

// fillBatch is how many records one fillServed call reads.
const fillBatch = 200

// Servable returns, of source's newest `newest` successful builds, every
// build a listing of the source can pick (per package version the
// newest, the newest with a source tarball and the newest with each
// binary), newest first: index.Served and the binary layouts' picks
// applied to them give what they give applied to all of the source's
// successful builds. It reads only those builds' records, unless the
// served keys are behind the builds (a version without them wrote) and
// were rebuilt within rebuildPause: then it reads every build, as the
// listings did before.
func (r *Registry) Servable(ctx context.Context, source string, newest int) ([]*Build, error) {
	keys := append(slices.Clip(stateKeys), keyServed(source, "succeeded"), keyServed(source, "tops"))
	for range 3 {
		res, err := readServed.Run(ctx, r.rdb, keys, newest).Slice()
		if err != nil {
			return nil, fmt.Errorf("list builds of %s: %w", source, err)
		}
		if state := res[0].(int64); state != 1 {
			ok, err := r.repairServed(ctx, state)
			if err != nil {
				return nil, err
			}
			if !ok {
				return r.scanBuilds(ctx, Filter{Source: source, Status: StatusSucceeded, Limit: newest})
			}
			continue
		}
		out := make([]*Build, 0, len(res)-1)
		for _, v := range res[1:] {
			b, ok := decodeBuild(v)
			// The scripts keep only the source's successful builds here;
			// a record another writer put behind their back is left out.
			if !ok || b.Source != source || b.Status != StatusSucceeded {
				continue
			}
			r.ids.see(b.ID)
			out = append(out, b)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
		return out, nil
	}
	// Rebuilt and found behind again at once: a version without the
	// served keys is writing.
	return r.scanBuilds(ctx, Filter{Source: source, Status: StatusSucceeded, Limit: newest})
}

var wipeKeys = []string{keyServedSources, keyServedCounts, keyServedFilled, keyServedGen, keyServedEpoch, keyServedRebuilt, keyBuildCounts}

// rebuildServed empties the served keys and fills them again, unless a
// rebuild began within rebuildPause (began false).
func (r *Registry) rebuildServed(ctx context.Context) (began bool, err error) {
	gen, err := wipeServed.Run(ctx, r.rdb, wipeKeys, "rebuild", rebuildPause.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("rebuild the served builds: %w", err)
	}
	if gen == 0 {
		return false, nil
	}
	if r.OnServedRebuild != nil {
		r.OnServedRebuild()
	}
	return true, r.fillServed(ctx)
}

// fillServed walks every build once, a batch per script, adding it to the
// served keys of their generation (when there is none yet, it starts the
// first); the last batch marks the generation filled. A process fills
// once at a time (r.filling): its other listings wait for that fill, or
// for their context, and then find it done. A rebuild that begins
// meanwhile ends this walk: the listing reads the state again.
func (r *Registry) fillServed(ctx context.Context) error {
	select {
	case r.filling <- struct{}{}:
		defer func() { <-r.filling }()
	case <-ctx.Done():
		return fmt.Errorf("fill the served builds: %w", ctx.Err())
	}
	vals, err := r.rdb.MGet(ctx, keyServedGen, keyServedFilled).Result()
	if err != nil {
		return fmt.Errorf("fill the served builds: %w", err)
	}
	gen, _ := vals[0].(string)
	if filled, _ := vals[1].(string); gen != "" && filled == gen {
		return nil
	}
	if gen == "" {
		// The first generation empties what the scripts wrote before it
		// (right, but maybe beside a version that did not write it); a
		// process that began it first is joined. Its copy of the build
		// counts needs the counts: a store that never counted them counts
		// them now, once.
		if _, err := r.CountBuildsByStatus(ctx); err != nil {
			return fmt.Errorf("fill the served builds: %w", err)
		}
		g, err := wipeServed.Run(ctx, r.rdb, wipeKeys, "first", 0).Int64()
		if err != nil {
			return fmt.Errorf("fill the served builds: %w", err)
		}
		gen = strconv.FormatInt(g, 10)
	}
	keys := []string{keyServedGen, keyBuilds, keyServedFilled}
	for after := int64(0); ; {
		next, err := fillServed.Run(ctx, r.rdb, keys, gen, after, fillBatch).Int64()
		if err != nil {
			return fmt.Errorf("fill the served builds after build %d: %w", after, err)
		}
		if next <= 0 {
			return nil
		}
		after = next
	}
}
