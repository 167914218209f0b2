package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
)

// BuilderCache lists every builder for a caller that does so often (the
// poller, each tick): each call reads every record, as Builders does, but
// decodes only the records that changed since the last call. The
// builders it returns are shared between calls: read them, never change
// them. It is not safe for concurrent use.
type BuilderCache struct {
	r     *Registry
	byKey map[string]cachedBuilder
}

type cachedBuilder struct {
	raw string // the record's stored JSON
	b   *Builder
}

// NewBuilderCache returns an empty cache of r's builders.
func (r *Registry) NewBuilderCache() *BuilderCache {
	return &BuilderCache{r: r, byKey: map[string]cachedBuilder{}}
}

// Builders lists every builder, sorted by key, as Registry.Builders("")
// does.
func (c *BuilderCache) Builders(ctx context.Context) ([]*Builder, error) {
	raw, err := c.r.rdb.HGetAll(ctx, keyBuilders).Result()
	if err != nil {
		return nil, fmt.Errorf("list git-builders: %w", err)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	next := make(map[string]cachedBuilder, len(raw))
	out := make([]*Builder, 0, len(raw))
	for _, k := range keys {
		cb := c.byKey[k]
		if cb.b == nil || cb.raw != raw[k] {
			cb = cachedBuilder{raw: raw[k], b: new(Builder)}
			if err := json.Unmarshal([]byte(cb.raw), cb.b); err != nil {
				return nil, fmt.Errorf("list git-builders: %w", err)
			}
		}
		next[k] = cb
		out = append(out, cb.b)
	}
	c.byKey = next // forget the builders that went
	return out, nil
}
