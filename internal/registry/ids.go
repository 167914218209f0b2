package registry

import (
	"sync/atomic"
)

// Build ids and attempt tokens never repeat, even after Redis lost writes
// it had acknowledged (a failover to a replica that lacked them, a crash
// under appendfsync everysec, an older AOF restored). docs/fleet.md
// ("Ids and tokens that never repeat") has the argument; in short:
//
//   - A build id is INCR of keyBuildSeq, lifted past what the counter may
//     have lost whenever a regression is seen. Two witnesses sit outside
//     the lost writes: the Redis process (run_id) that the counter last
//     counted under, kept beside it, since one Redis process never loses
//     what it acknowledged, so lost writes imply a new process; and every
//     process's high-water mark (the highest id it has handed out or
//     read), passed to every create. On either, the counter jumps by
//     IDGap past the larger of itself and the mark.
//   - An attempt token is Redis's clock in microseconds, or one more than
//     the build's previous token when that is larger: tokens of a build
//     still grow, and a token taken after lost writes is read from a
//     clock that has moved on since any token handed out before them.

// IDGap is how far the build-id counter jumps past what it knows when it
// finds it may have lost writes: more ids than a fleet hands out in the
// writes Redis can lose (everysec's last second or two; a failover's
// replica lag, bounded by min-replicas-max-lag), at 100 builds a second.
const IDGap = 1000

// keyBuildSeqRun holds the run_id of the Redis process that last counted
// build ids.
const keyBuildSeqRun = keyBuildSeq + ":run"

// highWater is the highest value a process has seen of something that
// only grows.
type highWater struct{ v atomic.Int64 }

func (h *highWater) see(n int64) {
	for {
		cur := h.v.Load()
		if n <= cur || h.v.CompareAndSwap(cur, n) {
			return
		}
	}
}

func (h *highWater) get() int64 { return h.v.Load() }

// SeeBuildID raises this process's high-water mark of build ids to id: a
// witness of ids handed out that lives outside Redis (for example the
// highest build id among the artifacts a store holds).
func (r *Registry) SeeBuildID(id int64) { r.ids.see(id) }

// IDJump says that CreateBuild found the build-id counter behind (Redis
// lost writes) and moved it past what it may have handed out before.
type IDJump struct {
	Reason   string // "new redis process" or "behind this process's high-water mark"
	Counter  int64  // what the counter held
	HighMark int64  // this process's high-water mark
	ID       int64  // the id handed out after the jump
}

// idJumpReasons are the script's codes.
var idJumpReasons = map[int64]string{1: "new redis process", 2: "behind this process's high-water mark"}

// nextBuildID is the Lua that takes a build id into the local id: KEYS[2]
// is the counter, KEYS[6] its run key; ARGV[4] the caller's high-water
// mark, ARGV[5] IDGap. It sets jump (0, or a reason code) and before.
const nextBuildID = `
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
local before = tonumber(redis.call('GET', KEYS[2]) or '0')
local mark, gap = tonumber(ARGV[4]), tonumber(ARGV[5])
local jump = 0
local counted = redis.call('GET', KEYS[6])
if counted ~= run then
  if counted or before > 0 then jump = 1 end
  redis.call('SET', KEYS[6], run)
end
if jump == 0 and before + 1 <= mark then jump = 2 end
if jump > 0 then
  redis.call('SET', KEYS[2], string.format('%d', math.max(before, mark) + gap))
end
id = redis.call('INCR', KEYS[2])
`

// nextToken is the Lua that takes the next attempt token of the attempt
// hash KEYS[2] into the local tok: Redis's clock in microseconds (below
// 2^53, so exact in Lua's numbers until the year 2255), or the previous
// token + 1 when that is larger.
const nextToken = `
local now = redis.call('TIME')
local tok = math.max(tonumber(now[1]) * 1000000 + tonumber(now[2]),
  tonumber(redis.call('HGET', KEYS[2], 'token') or '0') + 1)
redis.call('HSET', KEYS[2], 'token', string.format('%d', tok))
`
