package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// A finished build's log leaves Redis for the artifact store
// (internal/buildlog does the moving): Redis keeps a log only while its
// build runs and until it is moved. The store's copy is put first, then
// NameLog names it in the record and drops Redis's copy in one script,
// so a record never names a log that is not stored, and a crash between
// the two leaves a stored file no record names, which the orphan sweep
// removes.

// LogFile is the file name of a finished build's log in the artifact
// store, beside its attempt's artifacts.
const LogFile = "build.log.gz"

// Record is a build record as Redis held it when read: a later
// compare-and-set write (NameLog, DropBuilds) applies only if it is still
// the same.
type Record struct {
	Build *Build
	raw   string
}

// FinishedLog reads build id's record and its whole log as Redis holds
// them, at one instant, for moving the log into the store.
func (r *Registry) FinishedLog(ctx context.Context, id int64) (Record, []byte, error) {
	pipe := r.rdb.TxPipeline()
	rec, log := pipe.Get(ctx, keyBuild(id)), pipe.Get(ctx, keyBuildLog(id))
	_, err := pipe.Exec(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		return Record{}, nil, fmt.Errorf("build %d log: %w", id, err)
	}
	if errors.Is(rec.Err(), redis.Nil) {
		return Record{}, nil, fmt.Errorf("build %d %w", id, ErrNotFound)
	}
	var b Build
	if err := json.Unmarshal([]byte(rec.Val()), &b); err != nil {
		return Record{}, nil, fmt.Errorf("get build %d: %w", id, err)
	}
	return Record{Build: &b, raw: rec.Val()}, []byte(log.Val()), nil
}

// nameLog: KEYS build, log; ARGV the record as read, the log's length as
// read, the record naming the stored log. 1: written and Redis's copy
// dropped; 0: the record or the log changed meanwhile.
var nameLog = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('STRLEN', KEYS[2]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
return 1
`)

// NameLog records that the log of rec's build, logLen bytes as
// FinishedLog read them, is stored as l, and drops Redis's copy, in one
// script: only while the record and the log are as read (else an error
// matching ErrConflict, and nothing is written).
func (r *Registry) NameLog(ctx context.Context, rec Record, logLen int64, l StoredLog) (*Build, error) {
	b := *rec.Build
	b.Log = &l
	data, _ := json.Marshal(&b)
	id := b.ID
	ok, err := nameLog.Run(ctx, r.rdb, []string{keyBuild(id), keyBuildLog(id)}, rec.raw, logLen, data).Int()
	if err != nil {
		return nil, fmt.Errorf("build %d: name its stored log: %w", id, err)
	}
	if ok == 0 {
		return nil, fmt.Errorf("build %d or its log changed while its log was stored: %w", id, ErrConflict)
	}
	return &b, nil
}
