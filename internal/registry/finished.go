package registry

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// KeyFinished is a list of the ids of builds that finished (became
// Terminal), oldest first. The scripts that write build records push an
// id in the same step as the record that finishes the build, so a build
// is listed exactly once whoever finished it (its worker, a cancel, the
// reconciler after a worker died) and whatever happens to that writer
// next. internal/webhook consumes it; nothing else reads it.
const KeyFinished = "pkgfleet:builds-finished"

// FinishedChannel is the pub/sub channel on which the same scripts publish
// the id, so that a consumer need not wait for its next look at the list
// (a message lost with a connection only leaves it to that look).
const FinishedChannel = "pkgfleet:builds-finished"

// maxFinished bounds the list should nothing consume it (an API that
// never started): the oldest are dropped first.
const maxFinished = 100000

// noteFinished is Lua that pushes the build's id onto the list, and
// publishes it, when its record goes from old (not finished) to record
// (finished). It needs statusOf (countBuild).
var noteFinished = `
local function finished(s) return ` + func() string {
	var or []string
	for _, s := range terminal {
		or = append(or, fmt.Sprintf("s == '%s'", s))
	}
	return strings.Join(or, " or ")
}() + ` end
local function noteFinished(list, old, record)
  if not old or finished(statusOf(old)) or not finished(statusOf(record)) then return end
  local b = cjson.decode(record)
  local id = string.format('%.0f', b.id)
  redis.call('RPUSH', list, id)
  redis.call('LTRIM', list, -` + strconv.Itoa(maxFinished) + `, -1)
  redis.call('PUBLISH', '` + FinishedChannel + `', id)
end
`

// Finished returns up to n of the oldest ids on KeyFinished.
func (r *Registry) Finished(ctx context.Context, n int64) ([]int64, error) {
	vals, err := r.rdb.LRange(ctx, KeyFinished, 0, n-1).Result()
	if err != nil {
		return nil, fmt.Errorf("finished builds: %w", err)
	}
	out := make([]int64, 0, len(vals))
	for _, v := range vals {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("finished builds: %q is not a build id", v)
		}
		out = append(out, id)
	}
	return out, nil
}
