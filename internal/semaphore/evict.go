package semaphore

import (
	"context"
	"fmt"
	"strings"
)

// HeldKeys lists the keys that have a slot set (held now or lately), for
// the reconciler: it scans, so it is for a pass a minute, not a build.
func (s *Semaphore) HeldKeys(ctx context.Context) ([]string, error) {
	prefix, suffix := "pkgfleet:slots:{", "}:held"
	var out []string
	iter := s.rdb.Scan(ctx, 0, prefix+"*"+suffix, 500).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if strings.HasPrefix(k, prefix) && strings.HasSuffix(k, suffix) {
			out = append(out, k[len(prefix):len(k)-len(suffix)])
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list build slot keys: %w", err)
	}
	return out, nil
}

// Evict takes key's slot from holder, as the holder's Release would, and
// returns the parked waiters that may go now. It is for a holder that is
// known to hold it no longer (its attempt was superseded and stopped):
// the reconciler's repair.
func (s *Semaphore) Evict(ctx context.Context, key string, limit int, holder string) ([]Woken, error) {
	res, err := releaseScript.Run(ctx, s.rdb, keys(key), holder, max(limit, 1)).Slice()
	if err != nil {
		return nil, fmt.Errorf("evict %s from build slot of %s: %w", holder, key, err)
	}
	_, out := woken(res)
	return out, nil
}
