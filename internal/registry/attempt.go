package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Attempts and fenced writes: each delivery of a build to a worker is an
// attempt with a token from a per-build counter, increasing across
// attempts and workers. An attempt's writes (UpdateBuildAs, AppendLogAs)
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

// fenceCheck starts every fenced script: KEYS[1] is the attempt hash,
// ARGV[1] the writer's token. A stale writer gets {0, token, worker,
// attempt} of the current attempt.
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

var beginAttempt = redis.NewScript(`
local t = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('HSET', KEYS[1], 'worker', ARGV[1], 'attempt', ARGV[2])
return t
`)

// BeginAttempt makes a new attempt the build's current one: from now on
// the writes of every earlier attempt are refused.
func (r *Registry) BeginAttempt(ctx context.Context, id int64, number int, worker string) (Attempt, error) {
	t, err := beginAttempt.Run(ctx, r.rdb, []string{keyAttempt(id)}, worker, number).Int64()
	if err != nil {
		return Attempt{}, fmt.Errorf("begin attempt of build %d: %w", id, err)
	}
	return Attempt{Build: id, Token: t, Number: number, Worker: worker}, nil
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

// casBuild: KEYS attempt hash, build; ARGV token, old JSON, new JSON.
// {1}: written; {2}: the record changed meanwhile (read it again).
var casBuild = redis.NewScript(fenceCheck + `
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {2} end
redis.call('SET', KEYS[2], ARGV[3])
return {1}
`)

// UpdateBuildAs applies edit to the build, like UpdateBuild, but only
// while a is the build's current attempt; a stale attempt's edit is
// refused with a *SupersededError and nothing is written. The record's
// AttemptToken becomes a's. An Attempt with Token 0 writes unfenced.
func (r *Registry) UpdateBuildAs(ctx context.Context, a Attempt, edit func(*Build) error) (*Build, error) {
	if a.Token == 0 {
		return r.UpdateBuild(ctx, a.Build, edit)
	}
	key := keyBuild(a.Build)
	for range 20 {
		raw, err := r.rdb.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("build %d %w", a.Build, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("get build %d: %w", a.Build, err)
		}
		var b Build
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, fmt.Errorf("get build %d: %w", a.Build, err)
		}
		if err := edit(&b); err != nil {
			return nil, err
		}
		b.ID, b.AttemptToken = a.Build, a.Token
		data, _ := json.Marshal(&b)
		res, err := casBuild.Run(ctx, r.rdb, []string{keyAttempt(a.Build), key}, a.Token, raw, data).Slice()
		if err != nil {
			return nil, fmt.Errorf("update build %d: %w", a.Build, err)
		}
		switch res[0].(int64) {
		case 0:
			return nil, superseded(a, res)
		case 1:
			return &b, nil
		}
	}
	return nil, fmt.Errorf("build %d changed too often meanwhile: %w", a.Build, ErrConflict)
}

// appendLogAs: KEYS attempt hash, log; ARGV token, text, cap, mark.
var appendLogAs = redis.NewScript(fenceCheck + `
local len = redis.call('STRLEN', KEYS[2])
local cap = tonumber(ARGV[3])
if len >= cap then return {1} end
local s = ARGV[2]
if len + #s > cap then
  s = string.sub(s, 1, cap - len) .. ARGV[4]
end
redis.call('APPEND', KEYS[2], s)
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
