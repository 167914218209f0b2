package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/leader"
	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/redis/go-redis/v9"
)

// SignatureHeader carries sha256=HEX(HMAC-SHA256(body, secret)), the
// scheme of the inbound GitHub-style webhook (internal/api's hooks.go), so
// a receiver that checks GitHub's signatures checks these as they are.
const SignatureHeader = "X-Hub-Signature-256"

// Sign is the SignatureHeader value of body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Dispatcher turns finished builds into deliveries and sends them. Run
// campaigns for a lease: only the leader among the API replicas works.
type Dispatcher struct {
	Hooks     *Store
	Policy    *netpolicy.Policy // where deliveries may connect
	PublicURL string            // HTTP.PublicURL: the base of the links; "" for none
	Log       *slog.Logger
	Owner     string              // this process, in the lease
	Counted   func(result string) // counts each attempt's result (a metric); may be nil
	Lease     func(*leader.Elector)

	Every       time.Duration // how often it looks for work (default 1s)
	RetryBase   time.Duration // the wait after the first failure, doubled after each (default 10s)
	MaxAttempts int           // attempts of one delivery before it is given up (default 8: about 21 minutes)
	Timeout     time.Duration // of one attempt (default 10s)

	once sync.Once
	hc   *http.Client
}

func (d *Dispatcher) every() time.Duration { return orDefault(d.Every, time.Second) }
func (d *Dispatcher) timeout() time.Duration {
	return orDefault(d.Timeout, 10*time.Second)
}
func (d *Dispatcher) maxAttempts() int {
	if d.MaxAttempts > 0 {
		return d.MaxAttempts
	}
	return 8
}

// backoff is the wait after attempt n (1-based) failed.
func (d *Dispatcher) backoff(n int) time.Duration {
	w := orDefault(d.RetryBase, 10*time.Second)
	for i := 1; i < n && w < time.Hour; i++ {
		w *= 2
	}
	return w
}

func orDefault(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

// pending is a delivery waiting for its next attempt, as kept in Redis.
// Its body is fixed when the build finishes, so every attempt sends the
// same bytes.
type pending struct {
	Hook     string `json:"hook"`
	Build    int64  `json:"build"`
	Event    string `json:"event"`
	Attempts int    `json:"attempts"` // made so far
	Body     []byte `json:"body"`
}

// Run works while this process leads, until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	e := leader.New(d.Hooks.Redis, keyLease, d.Owner, d.Log)
	if d.Lease != nil {
		d.Lease(e)
	}
	return e.Run(ctx, func(ctx context.Context, term *leader.Term) {
		// A finished build is published as well as listed: the leader
		// passes at once, and every d.every() anyway (for the retries, and
		// for what a lost pub/sub message leaves on the list).
		ps := d.Hooks.Redis.Subscribe(ctx, registry.FinishedChannel)
		defer ps.Close()
		finished := ps.Channel()
		t := time.NewTicker(d.every())
		defer t.Stop()
		for {
			if err := d.Pass(ctx, term); err != nil && ctx.Err() == nil {
				d.Log.Warn("webhooks: a pass failed; the next one tries again", "error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-finished:
				for len(finished) > 0 { // one pass for the builds finished meanwhile
					<-finished
				}
			}
		}
	})
}

// Pass turns the builds finished since the last pass into deliveries,
// then makes the attempts that are due.
func (d *Dispatcher) Pass(ctx context.Context, term *leader.Term) error {
	for {
		ids, err := d.Hooks.Registry.Finished(ctx, 100)
		if err != nil {
			return err
		}
		for _, id := range ids {
			took, err := d.enqueue(ctx, term, id)
			if err != nil {
				return err
			}
			if !took {
				return nil // the term ended: the next leader goes on
			}
		}
		if len(ids) < 100 {
			break
		}
	}
	return d.sendDue(ctx, term)
}

// enqueueScript takes build id off the head of the finished list, records
// the builder's last outcome and schedules the deliveries, all or nothing,
// while term leads: KEYS lease, finished, last, due, deliveries; ARGV
// lease value, id, "source/builder", outcome ("" keeps the last), now,
// then delivery id and JSON pairs. A delivery id already pending is left
// as it is.
var enqueueScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return 0 end
redis.call('LPOP', KEYS[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[3], ARGV[4]) end
for i = 6, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[5], ARGV[i], ARGV[i+1]) == 1 then
    redis.call('ZADD', KEYS[4], ARGV[5], ARGV[i])
  end
end
return 1
`)

// enqueue schedules the deliveries of one finished build; took is false
// when it did not, because term no longer leads (or another took it).
func (d *Dispatcher) enqueue(ctx context.Context, term *leader.Term, id int64) (took bool, err error) {
	rdb := d.Hooks.Redis
	b, err := d.Hooks.Registry.Build(ctx, id)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax) || errors.As(err, &typ):
		// A record that cannot be read would hold up every build behind
		// it: it is taken off the list, with nothing sent.
		d.Log.Error("webhooks: a finished build's record cannot be read; no hook hears of it", "build", id, "error", err)
		b = nil
	case err != nil && !errors.Is(err, registry.ErrNotFound):
		return false, err
	}
	leaseKey, leaseValue := term.Fence()
	args := []any{leaseValue, strconv.FormatInt(id, 10), "", "", time.Now().UnixMilli()}
	if b != nil { // a build deleted since is only taken off the list
		key := b.Source + "/" + b.Builder
		last, err := rdb.HGet(ctx, keyLast, key).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return false, fmt.Errorf("last outcome of %s: %w", key, err)
		}
		event := eventOf(last, b.Status)
		args[2] = key
		if b.Status == apiv1.StatusSucceeded || b.Status == apiv1.StatusFailed {
			args[3] = b.Status
		}
		hooks, err := d.Hooks.of(ctx, b.Source)
		if err != nil {
			return false, err
		}
		for _, h := range hooks {
			if (h.Builder != "" && h.Builder != b.Builder) || (event == apiv1.EventBuild && !h.EveryBuild) {
				continue
			}
			p := pending{Hook: h.ID, Build: id, Event: event, Body: d.body(h, b, event)}
			data, _ := json.Marshal(p)
			args = append(args, h.ID+"-"+strconv.FormatInt(id, 10), data)
		}
	}
	keys := []string{leaseKey, registry.KeyFinished, keyLast, keyDue, keyDeliveries}
	n, err := enqueueScript.Run(ctx, rdb, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("schedule the webhooks of build %d: %w", id, err)
	}
	return n == 1, nil
}

// eventOf names what a build that finished with status, after the
// builder's last outcome last, is to its hooks.
func eventOf(last, status string) string {
	switch {
	case status == apiv1.StatusFailed:
		return apiv1.EventFailure
	case status == apiv1.StatusSucceeded && last == apiv1.StatusFailed:
		return apiv1.EventRecovery
	}
	return apiv1.EventBuild
}

// body is what a delivery of event about b to h sends.
func (d *Dispatcher) body(h apiv1.Hook, b *apiv1.Build, event string) []byte {
	p := apiv1.Payload{Event: event, Source: b.Source, Builder: b.Builder, Status: b.Status,
		Version: b.Version, Build: b}
	if b.Status == apiv1.StatusFailed {
		p.Reason, _, _ = strings.Cut(b.Detail, "\n")
	}
	if base := strings.TrimSuffix(d.PublicURL, "/"); base != "" {
		build := base + "/builds/" + strconv.FormatInt(b.ID, 10)
		p.Links = map[string]string{"build": build, "log": build + "/log",
			"badge": base + "/badges/" + url.PathEscape(b.Source) + "/" + url.PathEscape(b.Builder) + ".svg"}
	}
	p.Text = text(p)
	var out []byte
	if h.Slack {
		out, _ = json.Marshal(map[string]string{"text": p.Text})
	} else {
		out, _ = json.Marshal(p)
	}
	return out
}

// text is the one line a person reads (and Slack shows).
func text(p apiv1.Payload) string {
	what := map[string]string{apiv1.EventFailure: "failed", apiv1.EventRecovery: "recovered"}[p.Event]
	if what == "" {
		what = p.Status
	}
	s := fmt.Sprintf("pkgfleet: %s/%s", p.Source, p.Builder)
	if p.Version != "" {
		s += " " + p.Version
	}
	s += " " + what
	if p.Reason != "" {
		s += ": " + p.Reason
	}
	if l := p.Links["build"]; l != "" {
		s += " " + l
	}
	return s
}

// settleScript ends or reschedules an attempt of a delivery while term
// leads: KEYS lease, due, deliveries, log; ARGV lease value, delivery id,
// log entry, log size, then either nothing (done: forget it) or the new
// pending JSON and when it is due.
var settleScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[5] then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[2])
else
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
if ARGV[3] ~= '' then
  redis.call('LPUSH', KEYS[4], ARGV[3])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
end
return 1
`)

// sendConcurrency bounds the attempts in flight at once: a receiver that
// hangs delays the others by no more than one Timeout.
const sendConcurrency = 8

// duePage is how many due attempts one read takes; a pass reads up to
// dueReads pages (a burst is not held to one page a pass, and a pass
// still ends).
const duePage, dueReads = 100, 20

// sendDue makes the attempts that are due.
func (d *Dispatcher) sendDue(ctx context.Context, term *leader.Term) error {
	for range dueReads {
		n, err := d.sendDuePage(ctx, term)
		if err != nil || n < duePage {
			return err
		}
	}
	return nil
}

// sendDuePage makes up to duePage due attempts and says how many.
func (d *Dispatcher) sendDuePage(ctx context.Context, term *leader.Term) (int, error) {
	rdb := d.Hooks.Redis
	ids, err := rdb.ZRangeByScore(ctx, keyDue, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(time.Now().UnixMilli(), 10), Count: duePage}).Result()
	if err != nil {
		return 0, fmt.Errorf("due webhook deliveries: %w", err)
	}
	sem := make(chan struct{}, sendConcurrency)
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, did := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = d.attempt(ctx, term, did)
		})
	}
	wg.Wait()
	return len(ids), errors.Join(errs...)
}

// attempt makes one attempt of delivery did and settles it.
func (d *Dispatcher) attempt(ctx context.Context, term *leader.Term, did string) error {
	rdb := d.Hooks.Redis
	leaseKey, leaseValue := term.Fence()
	settle := func(entry *apiv1.HookDelivery, next *pending, at time.Time) error {
		args := []any{leaseValue, did, "", LogSize}
		hookID, _, _ := strings.Cut(did, "-")
		if entry != nil {
			data, _ := json.Marshal(entry)
			args[2] = data
		}
		if next != nil {
			data, _ := json.Marshal(next)
			args = append(args, data, at.UnixMilli())
		}
		keys := []string{leaseKey, keyDue, keyDeliveries, keyLog(hookID)}
		return settleScript.Run(ctx, rdb, keys, args...).Err()
	}
	raw, err := rdb.HGet(ctx, keyDeliveries, did).Bytes()
	if errors.Is(err, redis.Nil) {
		return settle(nil, nil, time.Time{}) // settled meanwhile
	}
	if err != nil {
		return fmt.Errorf("webhook delivery %s: %w", did, err)
	}
	var p pending
	if err := json.Unmarshal(raw, &p); err != nil {
		return settle(nil, nil, time.Time{})
	}
	h, err := d.Hooks.get(ctx, p.Hook)
	if errors.Is(err, ErrNotFound) {
		return settle(nil, nil, time.Time{}) // the hook was deleted
	}
	if err != nil {
		return err
	}
	p.Attempts++
	entry := &apiv1.HookDelivery{ID: did, Build: p.Build, Event: p.Event, Attempt: p.Attempts}
	status, sendErr := d.send(ctx, h, did, p)
	if ctx.Err() != nil {
		return nil // the term ended mid-attempt: the next leader makes it again
	}
	entry.At, entry.Status = time.Now().UTC(), status
	var refused *netpolicy.RefusedError
	switch {
	case sendErr == nil:
		entry.Result = apiv1.DeliveryDelivered
	case errors.As(sendErr, &refused):
		entry.Result, entry.Error = apiv1.DeliveryRefused, sendErr.Error()
	case p.Attempts >= d.maxAttempts():
		entry.Result, entry.Error = apiv1.DeliveryFailed, sendErr.Error()
	default:
		entry.Result, entry.Error = apiv1.DeliveryRetrying, sendErr.Error()
	}
	if d.Counted != nil {
		d.Counted(entry.Result)
	}
	lvl := slog.LevelInfo
	if entry.Result != apiv1.DeliveryDelivered {
		lvl = slog.LevelWarn
	}
	d.Log.Log(ctx, lvl, "webhook delivery", "hook", h.ID, "source", h.Source, "build", p.Build, "event", p.Event,
		"attempt", p.Attempts, "result", entry.Result, "status", status, "error", entry.Error)
	if entry.Result == apiv1.DeliveryRetrying {
		return settle(entry, &p, time.Now().Add(d.backoff(p.Attempts)))
	}
	return settle(entry, nil, time.Time{})
}

// send POSTs a delivery's body to its hook and returns the receiver's
// status. Its errors never hold the URL (some hold a secret in the path)
// nor the hook's secret.
func (d *Dispatcher) send(ctx context.Context, h apiv1.Hook, did string, p pending) (int, error) {
	secret, err := d.hookSecret(ctx, h.ID)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(p.Body))
	if err != nil {
		return 0, errors.New("the hook's URL cannot be used")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pkgfleet-webhook")
	req.Header.Set("X-Pkgfleet-Event", p.Event)
	req.Header.Set("Idempotency-Key", did) // the same for each attempt: a receiver can drop repeats
	if secret != "" {
		req.Header.Set(SignatureHeader, Sign(secret, p.Body))
	}
	resp, err := d.client().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // never stored nor shown
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("the receiver answered %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// client connects only where the policy allows, checked on the address
// dialled (so neither DNS nor a proxy setting gets round it), and follows
// no redirect: a receiver cannot send the signed body on elsewhere.
func (d *Dispatcher) client() *http.Client {
	d.once.Do(func() { d.hc = d.newClient() })
	return d.hc
}

func (d *Dispatcher) newClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:           d.Policy.DialContext,
			Proxy:                 nil,
			MaxIdleConns:          sendConcurrency,
			IdleConnTimeout:       30 * time.Second,
			TLSHandshakeTimeout:   d.timeout(),
			ResponseHeaderTimeout: d.timeout(),
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (d *Dispatcher) hookSecret(ctx context.Context, id string) (string, error) {
	sealed, err := d.Hooks.Redis.HGet(ctx, keySecrets, id).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("the hook's secret: %w", err)
	}
	secret, err := d.Hooks.Secrets.Unseal(sealPurpose(id), sealed)
	if err != nil {
		// Not the secret, only that it cannot be read (Git.CredentialKeyFile changed).
		return "", errors.New("the hook's secret cannot be read; see Git.CredentialKeyFile")
	}
	return secret, nil
}

// CheckURL refuses a hook URL that is not http(s), carries credentials,
// or names an address the policy refuses (checked again on every
// connection: a name may resolve elsewhere later).
func CheckURL(ctx context.Context, p *netpolicy.Policy, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("url must be an http:// or https:// URL")
	}
	if u.User != nil {
		return errors.New("url must not carry a user or password; use secret to sign deliveries")
	}
	if len(raw) > 2048 {
		return errors.New("url is longer than 2048 bytes")
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := p.Resolve(ctx, u.Hostname(), port); err != nil {
		var refused *netpolicy.RefusedError
		var dnsErr *net.DNSError
		switch {
		case errors.As(err, &refused):
			return err
		case errors.As(err, &dnsErr):
			return nil // not resolvable now; every delivery checks again
		}
		return err
	}
	return nil
}
