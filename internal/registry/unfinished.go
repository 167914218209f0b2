package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Unfinished lists the builds that are queued, waiting or running, newest
// first. It reads builds newest first until it has found as many as the
// status counts say there are (they are written in the same script as the
// records), so it costs a read of the recent builds, not of all.
func (r *Registry) Unfinished(ctx context.Context) ([]*Build, error) {
	counts, err := r.CountBuildsByStatus(ctx)
	if err != nil {
		return nil, err
	}
	want := 0
	for s, n := range counts {
		if !Terminal(s) {
			want += n
		}
	}
	var out []*Build
	const page = 500
	for start := int64(0); len(out) < want; start += page {
		_, vals, err := r.buildsPage(ctx, keyBuilds, start, page)
		if err != nil {
			return nil, fmt.Errorf("list unfinished builds: %w", err)
		}
		if len(vals) == 0 {
			break
		}
		for _, v := range vals {
			b, ok := decodeBuild(v)
			if ok && !Terminal(b.Status) {
				r.ids.see(b.ID)
				out = append(out, b)
			}
		}
	}
	return out, nil
}

func decodeBuild(v any) (*Build, bool) {
	s, ok := v.(string)
	if !ok {
		return nil, false
	}
	var b Build
	if json.Unmarshal([]byte(s), &b) != nil {
		return nil, false
	}
	return &b, true
}

// CurrentToken is the token of build id's current attempt: 0 when no
// attempt began (or the record of it is gone).
func (r *Registry) CurrentToken(ctx context.Context, id int64) (int64, error) {
	tok, err := r.rdb.HGet(ctx, keyAttempt(id), "token").Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("current attempt of build %d: %w", id, err)
	}
	return tok, nil
}
