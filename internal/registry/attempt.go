package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Attempts and fenced writes: each delivery of a build to a worker is an
// attempt with a token that increases across attempts and workers and
// never repeats, even after Redis lost writes (nextToken). An attempt's writes (UpdateBuildAs, AppendLogAs)
// are applied only while its token is the build's current one, checked in
// the same Lua script that writes, so an attempt that was superseded (its
// worker was cut off or paused and the build went to another) can never
// overwrite its successor's record, log or artifacts.

func keyAttempt(id int64) string { return keyBuild(id) + ":attempt" } // hash token, worker, attempt

// Attempt is one attempt at a build: what its writes are fenced with.
type Attempt struct {
	Build  int64
	Token  int64  // from BeginAttempt; 0 means unfenced (legacy writes)
	Number int    // the attempt's number (1, 2, …), for messages
	Worker string // the worker running it

	// seen is the record as this attempt last read or wrote it (copies
	// share it): the base of its next compare-and-set write, so that a
	// write costs one round trip when nobody else wrote meanwhile.
	seen *seenRecord
}

type seenRecord struct {
	mu  sync.Mutex
	raw []byte
}

func (a Attempt) lastSeen() []byte {
	if a.seen == nil {
		return nil
	}
	a.seen.mu.Lock()
	defer a.seen.mu.Unlock()
	return a.seen.raw
}

func (a Attempt) see(raw []byte) {
	if a.seen != nil {
		a.seen.mu.Lock()
		a.seen.raw = raw
		a.seen.mu.Unlock()
	}
}

// ErrSuperseded matches a *SupersededError.
var ErrSuperseded = errors.New("attempt superseded")

// SupersededError says that a write of a stale attempt was refused, and
// which attempt is the build's current one.
type SupersededError struct {
	Stale   Attempt
	Current Attempt // Token 0: no attempt is current (the counter is gone)
}

func (e *SupersededError) Error() string {
	if e.Current.Token == 0 {
		return fmt.Sprintf("attempt %d (token %d) of build %d is no longer current", e.Stale.Number, e.Stale.Token, e.Stale.Build)
	}
	return fmt.Sprintf("superseded by attempt %d (token %d) on worker %s", e.Current.Number, e.Current.Token, e.Current.Worker)
}

// Is makes errors.Is(err, ErrSuperseded) true.
func (e *SupersededError) Is(target error) bool { return target == ErrSuperseded }

// fenceCheck starts every fenced script (after its local functions):
// KEYS[1] is the attempt hash, ARGV[1] the writer's token. A stale writer
// gets {0, token, worker, attempt} of the current attempt.
const fenceCheck = `
local cur = redis.call('HMGET', KEYS[1], 'token', 'worker', 'attempt')
if tonumber(cur[1] or '0') ~= tonumber(ARGV[1]) then
  return {0, cur[1] or '0', cur[2] or '', cur[3] or '0'}
end
`

func superseded(a Attempt, res []any) error {
	cur := Attempt{Build: a.Build}
	if len(res) == 4 {
		cur.Token, _ = strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
		cur.Worker = fmt.Sprint(res[2])
		n, _ := strconv.Atoi(fmt.Sprint(res[3]))
		cur.Number = n
	}
	return &SupersededError{Stale: a, Current: cur}
}

// beginAttempt: KEYS build, attempt hash, builders; ARGV worker, attempt
// number, then the terminal statuses.
// {0}: no such build; {1, record}: finished, no attempt begun;
// {2, record, token[, builder]}: begun (no builder: it was deleted).
var beginAttempt = redis.NewScript(`
local raw = redis.call('GET', KEYS[1])
if not raw then return {0} end
local ok, b = pcall(cjson.decode, raw)
if not ok or type(b) ~= 'table' then return redis.error_reply('build record is not JSON') end
for i = 3, #ARGV do
  if b.status == ARGV[i] then return {1, raw} end
end
` + nextToken + `
redis.call('HSET', KEYS[2], 'worker', ARGV[1], 'attempt', ARGV[2])
local bl = redis.call('HGET', KEYS[3], tostring(b.source) .. '/' .. tostring(b.builder))
if bl then return {2, raw, tok, bl} end
return {2, raw, tok}
`)

// terminal lists the statuses in which a build is finished.
var terminal = func() []any {
	var out []any
	for _, s := range statuses {
		if Terminal(s) {
			out = append(out, s)
		}
	}
	return out
}()

// BeginAttempt reads build id and its builder and, unless the build is
// finished, makes a new attempt the build's current one: from now on the
// writes of every earlier attempt are refused. It is one script, so the
// check and the begin are atomic.
//
// A finished build (Terminal) is returned with a zero Attempt: none
// began. The builder is nil when it was deleted; the attempt begins
// anyway, so that it can record why the build cannot run.
func (r *Registry) BeginAttempt(ctx context.Context, id int64, number int, worker string) (*Build, *Builder, Attempt, error) {
	keys := []string{keyBuild(id), keyAttempt(id), keyBuilders}
	res, err := beginAttempt.Run(ctx, r.rdb, keys, append([]any{worker, number}, terminal...)...).Slice()
	if err != nil {
		return nil, nil, Attempt{}, fmt.Errorf("begin attempt of build %d: %w", id, err)
	}
	if res[0].(int64) == 0 {
		return nil, nil, Attempt{}, fmt.Errorf("build %d %w", id, ErrNotFound)
	}
	raw := []byte(res[1].(string))
	var b Build
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, nil, Attempt{}, fmt.Errorf("get build %d: %w", id, err)
	}
	if res[0].(int64) == 1 {
		return &b, nil, Attempt{}, nil
	}
	r.ids.see(id)
	a := Attempt{Build: id, Token: res[2].(int64), Number: number, Worker: worker, seen: &seenRecord{raw: raw}}
	if len(res) < 4 {
		return &b, nil, a, nil
	}
	var bl Builder
	if err := json.Unmarshal([]byte(res[3].(string)), &bl); err != nil {
		return nil, nil, Attempt{}, fmt.Errorf("get git-builder of build %d: %w", id, err)
	}
	return &b, &bl, a, nil
}

var checkAttempt = redis.NewScript(fenceCheck + `
local raw = redis.call('GET', KEYS[2])
if raw and cjson.decode(raw).status == 'canceled' then return {3} end
if KEYS[3] and redis.call('ZSCORE', KEYS[3], ARGV[2]) == false then return {2} end
return {1}
`)

// Errors of ConfirmAttempt besides a *SupersededError.
var (
	// ErrTaskLeaseLost means the queue no longer leases the attempt's
	// task to its worker (the lease ran out and the task was or will be
	// recovered).
	ErrTaskLeaseLost = errors.New("task lease lost")
	// ErrBuildCanceled means the build was canceled.
	ErrBuildCanceled = errors.New("build canceled")
)

// ConfirmAttempt checks, in one script, that a is still the build's
// current attempt (else a *SupersededError), that the build was not
// canceled (else ErrBuildCanceled) and, when leaseKey is set, that member
// is still in the sorted set leaseKey (the queue's lease of the attempt's
// task; else ErrTaskLeaseLost).
func (r *Registry) ConfirmAttempt(ctx context.Context, a Attempt, leaseKey, member string) error {
	keys := []string{keyAttempt(a.Build), keyBuild(a.Build)}
	if leaseKey != "" {
		keys = append(keys, leaseKey)
	}
	res, err := checkAttempt.Run(ctx, r.rdb, keys, a.Token, member).Slice()
	if err != nil {
		return fmt.Errorf("confirm attempt of build %d: %w", a.Build, err)
	}
	switch res[0].(int64) {
	case 0:
		return superseded(a, res)
	case 2:
		return ErrTaskLeaseLost
	case 3:
		return ErrBuildCanceled
	}
	return nil
}

// casBuild: KEYS attempt hash, build, build counts, finished[, log]; ARGV
// token, old JSON, new JSON[, "append", log text, log cap, truncation
// mark | "drop", the log's length]. {1}: written (and counted by status),
// and the text appended to the log, or the log dropped; {2, current}: the
// record changed meanwhile (no current: it is gone); {3}: the log to drop
// is no longer the length given (nothing written). The build moves in its
// source's served keys (served.go) in the same step.
var casBuild = redis.NewScript(cappedAppend + countBuild + noteFinished + servedLua + fenceCheck + `
local cur = redis.call('GET', KEYS[2])
if cur ~= ARGV[2] then return {2, cur} end
if ARGV[4] == 'drop' and redis.call('STRLEN', KEYS[5]) ~= tonumber(ARGV[5]) then return {3} end
redis.call('SET', KEYS[2], ARGV[3])
countBuild(KEYS[3], cur, ARGV[3])
noteFinished(KEYS[4], cur, ARGV[3])
servedMove(KEYS[2], cur, ARGV[3])
if ARGV[4] == 'append' then append_capped(KEYS[5], ARGV[5], ARGV[6], ARGV[7])
elseif ARGV[4] == 'drop' then redis.call('DEL', KEYS[5]) end
return {1}
`)

// UpdateBuildAs applies edit to the build, like UpdateBuild, but only
// while a is the build's current attempt; a stale attempt's edit is
// refused with a *SupersededError and nothing is written. The record's
// AttemptToken becomes a's. An Attempt with Token 0 writes unfenced.
func (r *Registry) UpdateBuildAs(ctx context.Context, a Attempt, edit func(*Build) error) (*Build, error) {
	return r.UpdateBuildWithLogAs(ctx, a, nil, 0, "", edit)
}

// UpdateBuildWithLogAs is UpdateBuildAs that also appends p to the build's
// log (as AppendLogAs would) in the same script: both land, or neither.
// When edit returns an error, nothing is written, p included.
//
// It compares against the record as a last saw it, so that it costs one
// round trip when nothing else wrote meanwhile; a record that changed
// comes back from the failed write, and edit runs again on it.
func (r *Registry) UpdateBuildWithLogAs(ctx context.Context, a Attempt, p []byte, limit int64, limitName string, edit func(*Build) error) (*Build, error) {
	if a.Token == 0 {
		b, err := r.UpdateBuild(ctx, a.Build, edit)
		if err == nil {
			err = r.AppendLog(ctx, a.Build, p, limit, limitName)
		}
		return b, err
	}
	var logArgs []any
	if len(p) > 0 {
		logArgs = []any{"append", p, limit, fmt.Sprintf(TruncationMark, limitName)}
	}
	return r.casAs(ctx, a, logArgs, edit)
}

// UpdateBuildDroppingLogAs is UpdateBuildAs whose record names the
// build's log as stored (edit sets Build.Log) and drops Redis's copy in
// the same script: only while that copy is still logLen bytes long, the
// length the stored copy was made from. Else nothing is written and the
// error matches ErrLogChanged. It needs an attempt's token.
func (r *Registry) UpdateBuildDroppingLogAs(ctx context.Context, a Attempt, logLen int64, edit func(*Build) error) (*Build, error) {
	if a.Token == 0 {
		return nil, fmt.Errorf("build %d: a stored log is named only by an attempt", a.Build)
	}
	return r.casAs(ctx, a, []any{"drop", logLen}, edit)
}

// ErrLogChanged means a build's log in Redis changed after it was read to
// be stored (UpdateBuildDroppingLogAs); it matches ErrConflict too.
var ErrLogChanged = fmt.Errorf("its log changed while it was stored: %w", ErrConflict)

// casAs writes edit's record as attempt a with casBuild, doing logArgs
// to the build's log in the same script.
func (r *Registry) casAs(ctx context.Context, a Attempt, logArgs []any, edit func(*Build) error) (*Build, error) {
	key := keyBuild(a.Build)
	keys := []string{keyAttempt(a.Build), key, keyBuildCounts, KeyFinished}
	if len(logArgs) > 0 {
		keys = append(keys, keyBuildLog(a.Build))
	}
	raw := a.lastSeen()
	if raw == nil {
		var err error
		if raw, err = r.rdb.Get(ctx, key).Bytes(); errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("build %d %w", a.Build, ErrNotFound)
		} else if err != nil {
			return nil, fmt.Errorf("get build %d: %w", a.Build, err)
		}
	}
	for range 20 {
		var b Build
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, fmt.Errorf("get build %d: %w", a.Build, err)
		}
		if err := edit(&b); err != nil {
			return nil, err
		}
		b.ID, b.AttemptToken = a.Build, a.Token
		data, _ := json.Marshal(&b)
		res, err := casBuild.Run(ctx, r.rdb, keys, append([]any{a.Token, raw, data}, logArgs...)...).Slice()
		if err != nil {
			return nil, fmt.Errorf("update build %d: %w", a.Build, err)
		}
		switch res[0].(int64) {
		case 0:
			return nil, superseded(a, res)
		case 1:
			a.see(data)
			return &b, nil
		case 3:
			return nil, fmt.Errorf("build %d: %w", a.Build, ErrLogChanged)
		}
		cur, ok := res[1].(string)
		if !ok {
			return nil, fmt.Errorf("build %d %w", a.Build, ErrNotFound)
		}
		raw = []byte(cur)
		a.see(raw)
	}
	return nil, fmt.Errorf("build %d changed too often meanwhile: %w", a.Build, ErrConflict)
}

// appendLogAs: KEYS attempt hash, log; ARGV token, text, cap, mark.
var appendLogAs = redis.NewScript(cappedAppend + fenceCheck + `
append_capped(KEYS[2], ARGV[2], ARGV[3], ARGV[4])
return {1}
`)

// AppendLogAs is AppendLog fenced by attempt: a stale attempt's output is
// refused with a *SupersededError.
func (r *Registry) AppendLogAs(ctx context.Context, a Attempt, p []byte, limit int64, limitName string) error {
	if a.Token == 0 {
		return r.AppendLog(ctx, a.Build, p, limit, limitName)
	}
	if len(p) == 0 {
		return nil
	}
	mark := fmt.Sprintf(TruncationMark, limitName)
	res, err := appendLogAs.Run(ctx, r.rdb, []string{keyAttempt(a.Build), keyBuildLog(a.Build)}, a.Token, p, limit, mark).Slice()
	if err != nil {
		return fmt.Errorf("build %d log: %w", a.Build, err)
	}
	if res[0].(int64) == 0 {
		return superseded(a, res)
	}
	return nil
}
