// Package webhook tells people's systems about finished builds: outbound
// webhooks, set per source or per git-builder, called on a failure, on a
// recovery (the first success after a failure) and, when asked, on every
// finished build. Each delivery is a signed JSON POST (or a Slack-style
// {"text": …}); one that fails is retried with backoff, the pending
// retries kept in Redis so that they outlive the API process, and each
// attempt is kept in a short log per hook.
//
// Where it learns of finished builds: registry.KeyFinished, which the
// script that writes a finishing record fills in the same step, so each
// finished build is seen once whoever finished it. One API replica, the
// leader of this package's lease, turns it into deliveries and sends
// them. Every connection goes through the outbound policy
// (internal/netpolicy).
//
// It is not internal/notify (the pub/sub of build events to pages) and
// not the inbound webhooks that trigger polls (internal/api's hooks.go).
package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/redis/go-redis/v9"
)

// Redis keys, all under pkgfleet:outhooks.
const (
	keyHooks      = "pkgfleet:outhooks"            // hash id → hook JSON (its full URL)
	keySecrets    = "pkgfleet:outhooks:secrets"    // hash id → sealed secret
	keyDue        = "pkgfleet:outhooks:due"        // zset delivery id → when (unix ms)
	keyDeliveries = "pkgfleet:outhooks:deliveries" // hash delivery id → pending delivery JSON
	keyLast       = "pkgfleet:outhooks:last"       // hash "source/builder" → its last succeeded/failed
	keyLease      = "pkgfleet:outhooks:lease"
)

func keyOfSource(source string) string { return "pkgfleet:outhooks:of:" + source } // set of hook ids
func keyLog(id string) string          { return "pkgfleet:outhooks:log:" + id }    // list, newest first

// LogSize is how many delivery attempts a hook's log keeps.
const LogSize = 50

// Sealer keeps a secret encrypted at rest (internal/credential.Store).
type Sealer interface {
	Seal(purpose, secret string) (string, error)
	Unseal(purpose, stored string) (string, error)
}

// Store keeps the hooks and their delivery logs.
type Store struct {
	Redis    redis.UniversalClient
	Registry *registry.Registry
	Secrets  Sealer
}

func sealPurpose(id string) string { return "outbound-webhook-secret\x00" + id }

// ErrNotFound is a hook that does not exist (in that source).
var ErrNotFound = registry.ErrNotFound

// MaxPerSource bounds the hooks of a source, its builders' included: each
// is a request per failure, and a write token must not turn one build
// into a flood at someone's server.
const MaxPerSource = 50

// Create stores a new hook of source (and builder, if not ""), whose URL
// the caller has checked (CheckURL).
func (s *Store) Create(ctx context.Context, source, builder string, in apiv1.NewHook) (apiv1.Hook, error) {
	if _, err := s.Registry.Source(ctx, source); err != nil {
		return apiv1.Hook{}, err
	}
	if n, err := s.Redis.SCard(ctx, keyOfSource(source)).Result(); err != nil {
		return apiv1.Hook{}, wrap("count hooks", err)
	} else if n >= MaxPerSource {
		return apiv1.Hook{}, fmt.Errorf("source %s has %d hooks, the most it may have: %w", source, n, registry.ErrConflict)
	}
	if builder != "" {
		if _, err := s.Registry.Builder(ctx, source, builder); err != nil {
			return apiv1.Hook{}, err
		}
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return apiv1.Hook{}, err
	}
	h := apiv1.Hook{ID: hex.EncodeToString(b[:]), Source: source, Builder: builder, URL: in.URL,
		EveryBuild: in.EveryBuild, Slack: in.Slack, SecretSet: in.Secret != "", CreatedAt: time.Now().UTC().Truncate(time.Second)}
	sealed, err := s.Secrets.Seal(sealPurpose(h.ID), in.Secret)
	if err != nil {
		return apiv1.Hook{}, fmt.Errorf("seal the hook's secret: %w", err)
	}
	data, _ := json.Marshal(h)
	_, err = s.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyHooks, h.ID, data)
		if sealed != "" {
			p.HSet(ctx, keySecrets, h.ID, sealed)
		}
		p.SAdd(ctx, keyOfSource(source), h.ID)
		return nil
	})
	if err != nil {
		return apiv1.Hook{}, fmt.Errorf("store hook: %w", err)
	}
	return Shown(h), nil
}

// List returns the hooks of source: those of the whole source when
// builder is "", else those of that builder, as they may be shown.
func (s *Store) List(ctx context.Context, source, builder string) ([]apiv1.Hook, error) {
	return s.list(ctx, source, func(h apiv1.Hook) bool { return h.Builder == builder })
}

// ListAll returns every hook of source, its builders' too, as they may be
// shown, in the order they were made.
func (s *Store) ListAll(ctx context.Context, source string) ([]apiv1.Hook, error) {
	return s.list(ctx, source, func(apiv1.Hook) bool { return true })
}

func (s *Store) list(ctx context.Context, source string, keep func(apiv1.Hook) bool) ([]apiv1.Hook, error) {
	hooks, err := s.of(ctx, source)
	if err != nil {
		return nil, err
	}
	out := []apiv1.Hook{}
	for _, h := range hooks {
		if keep(h) {
			out = append(out, Shown(h))
		}
	}
	slices.SortFunc(out, func(a, b apiv1.Hook) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// of returns every hook of source, with its full URL.
func (s *Store) of(ctx context.Context, source string) ([]apiv1.Hook, error) {
	ids, err := s.Redis.SMembers(ctx, keyOfSource(source)).Result()
	if err != nil || len(ids) == 0 {
		return nil, wrap("list hooks", err)
	}
	vals, err := s.Redis.HMGet(ctx, keyHooks, ids...).Result()
	if err != nil {
		return nil, wrap("list hooks", err)
	}
	var out []apiv1.Hook
	for _, v := range vals {
		if str, ok := v.(string); ok {
			var h apiv1.Hook
			if err := json.Unmarshal([]byte(str), &h); err == nil {
				out = append(out, h)
			}
		}
	}
	return out, nil
}

// get returns one hook with its full URL.
func (s *Store) get(ctx context.Context, id string) (apiv1.Hook, error) {
	raw, err := s.Redis.HGet(ctx, keyHooks, id).Bytes()
	if errors.Is(err, redis.Nil) {
		return apiv1.Hook{}, fmt.Errorf("hook %q %w", id, ErrNotFound)
	}
	if err != nil {
		return apiv1.Hook{}, wrap("get hook", err)
	}
	var h apiv1.Hook
	return h, json.Unmarshal(raw, &h)
}

// Get returns one hook of source, as it may be shown.
func (s *Store) Get(ctx context.Context, source, id string) (apiv1.Hook, error) {
	h, err := s.get(ctx, id)
	if err == nil && h.Source != source {
		err = fmt.Errorf("hook %q %w in source %s", id, ErrNotFound, source)
	}
	return Shown(h), err
}

// Delete removes a hook of source with its secret and log; its pending
// deliveries are dropped when they come due.
func (s *Store) Delete(ctx context.Context, source, id string) error {
	if _, err := s.Get(ctx, source, id); err != nil {
		return err
	}
	_, err := s.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, keyHooks, id)
		p.HDel(ctx, keySecrets, id)
		p.SRem(ctx, keyOfSource(source), id)
		p.Del(ctx, keyLog(id))
		return nil
	})
	return wrap("delete hook", err)
}

// DeleteOf removes the hooks of a builder of source that is being
// deleted, or with builder "" every hook of a deleted source, so that a
// later builder or source of the same name does not inherit them.
func (s *Store) DeleteOf(ctx context.Context, source, builder string) error {
	hooks, err := s.of(ctx, source)
	if err != nil {
		return err
	}
	for _, h := range hooks {
		if builder == "" || h.Builder == builder {
			if err := s.Delete(ctx, source, h.ID); err != nil {
				return err
			}
		}
	}
	if builder != "" { // a new builder of the name starts with no last outcome
		return wrap("forget the last outcome", s.Redis.HDel(ctx, keyLast, source+"/"+builder).Err())
	}
	return nil
}

// Deliveries returns the delivery log of a hook of source, newest first.
func (s *Store) Deliveries(ctx context.Context, source, id string) ([]apiv1.HookDelivery, error) {
	if _, err := s.Get(ctx, source, id); err != nil {
		return nil, err
	}
	vals, err := s.Redis.LRange(ctx, keyLog(id), 0, LogSize-1).Result()
	if err != nil {
		return nil, wrap("hook deliveries", err)
	}
	out := []apiv1.HookDelivery{}
	for _, v := range vals {
		var d apiv1.HookDelivery
		if json.Unmarshal([]byte(v), &d) == nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// Shown is h as it may be listed: its URL's path and query, where some
// receivers keep their secret, are redacted.
func Shown(h apiv1.Hook) apiv1.Hook {
	h.URL = RedactURL(h.URL)
	return h
}

// RedactURL keeps a URL's scheme, host and port.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	out := u.Scheme + "://" + u.Host
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		out += "/…"
	}
	return out
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
