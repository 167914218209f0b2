package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/leader"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/pkgfleet/pkgfleet/internal/webhook"
)

const outSecret = "hook-secret-0123456789abcdef"

// receiver is a real HTTP server that records each request it gets and
// answers them with the statuses in answers, then 200.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	got     []received
	at      []time.Time // when each came
	answers []int
}

type received struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, answers ...int) *receiver {
	rc := &receiver{answers: answers}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{r.Header.Clone(), body})
		rc.at = append(rc.at, time.Now())
		status := 200
		if len(rc.answers) > 0 {
			status, rc.answers = rc.answers[0], rc.answers[1:]
		}
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// waitFor waits until the receiver has had n requests and returns them.
func (rc *receiver) waitFor(t *testing.T, n int) []received {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "the receiver to get a delivery", func() bool { return len(rc.requests()) >= n })
	return rc.requests()
}

// lockedBuffer collects a logger's output across goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var replicas atomic.Int64

// startDispatcher runs srv's webhook dispatcher with quick passes and
// retries, logging into log; stop ends it and waits.
func startDispatcher(t *testing.T, srv *Server, log io.Writer) (stop func()) {
	t.Helper()
	d := srv.Dispatcher()
	// Each dispatcher of a test is its own replica (in production the
	// owner is host:pid, one per API process).
	d.Owner += fmt.Sprintf(":%d", replicas.Add(1))
	d.Every, d.RetryBase = 20*time.Millisecond, 200*time.Millisecond
	d.Log = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d.Lease = func(e *leader.Elector) { e.TTL = 3 * time.Second }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// finish records a build of src/pkg that ended with status.
func finish(t *testing.T, h *harness, sha, status string) *registry.Build {
	t.Helper()
	ctx := context.Background()
	b, _, err := h.srv.Registry.CreateBuild(ctx, &registry.Build{Source: "src", Builder: "pkg", Language: "r",
		Ref: "main", SHA: strings.Repeat(sha, 40), Trigger: "manual", MaxAttempts: 1}, registry.ReuseActive)
	if err != nil {
		t.Fatal(err)
	}
	b, err = h.srv.Registry.UpdateBuild(ctx, b.ID, func(b *registry.Build) error {
		b.Status, b.Version = status, "1.0."+sha
		if status == registry.StatusFailed {
			b.Detail = "R CMD build failed: no DESCRIPTION\nsecond line"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hookFixture(t *testing.T, settings map[string]string) *harness {
	t.Helper()
	h := setup(t, true, settings)
	if code, body := h.req("POST", "/api/v1/sources", `{"name":"src","type":"git"}`, h.tok["write"]); code != 201 {
		t.Fatalf("create source: %d %s", code, body)
	}
	if err := h.srv.Registry.CreateBuilder(context.Background(), &registry.Builder{Source: "src", Name: "pkg", Language: "r",
		URL: "https://git.invalid/pkg.git", BuildTrigger: registry.TriggerCommits, CloneDepth: 1}); err != nil {
		t.Fatal(err)
	}
	return h
}

func createHook(t *testing.T, h *harness, path string, in apiv1.NewHook) apiv1.Hook {
	t.Helper()
	body, _ := json.Marshal(in)
	code, out := h.req("POST", path, string(body), h.tok["write"])
	if code != 201 {
		t.Fatalf("create hook: %d %s", code, out)
	}
	if strings.Contains(out, outSecret) {
		t.Errorf("creating a hook echoes its secret: %s", out)
	}
	var hook apiv1.Hook
	if err := json.Unmarshal([]byte(out), &hook); err != nil {
		t.Fatal(err)
	}
	return hook
}

func deliveries(t *testing.T, h *harness, hook apiv1.Hook) (string, []apiv1.HookDelivery) {
	t.Helper()
	code, out := h.req("GET", "/api/v1/sources/src/hooks/"+hook.ID+"/deliveries", "", h.tok["read"])
	if code != 200 {
		t.Fatalf("deliveries: %d %s", code, out)
	}
	var list apiv1.HookDeliveries
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	return out, list.Deliveries
}

// TestOutboundWebhookIsSignedAndToldOfFailureAndRecovery: a builder's hook
// gets a failure, then the recovery, signed with HMAC-SHA256 as GitHub
// signs (the header the inbound webhook checks), with the build, its
// status, reason, version and links; a success after a success is not
// sent. The secret is in no answer and no log line, and the URL's path
// (where Slack keeps its secret) is listed redacted.
func TestOutboundWebhookIsSignedAndToldOfFailureAndRecovery(t *testing.T) {
	t.Parallel()
	h := hookFixture(t, map[string]string{"PKGFLEET_HTTP_PUBLICURL": "https://pkgfleet.example"})
	rc := newReceiver(t)
	hook := createHook(t, h, "/api/v1/sources/src/git-builders/pkg/hooks", apiv1.NewHook{URL: rc.URL + "/in/path-secret", Secret: outSecret})
	slack := newReceiver(t)
	createHook(t, h, "/api/v1/sources/src/hooks", apiv1.NewHook{URL: slack.URL + "/services/T0/B0/XXXX", Slack: true})
	var log lockedBuffer
	startDispatcher(t, h.srv, &log)

	check := func(r received, event string, b *registry.Build) {
		t.Helper()
		mac := hmac.New(sha256.New, []byte(outSecret))
		mac.Write(r.body)
		if got, want := r.header.Get("X-Hub-Signature-256"), "sha256="+hex.EncodeToString(mac.Sum(nil)); got != want {
			t.Errorf("signature %q, want %q", got, want)
		}
		var p apiv1.Payload
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatalf("payload: %v: %s", err, r.body)
		}
		if p.Event != event || p.Build == nil || p.Build.ID != b.ID || p.Status != b.Status || p.Version != b.Version ||
			p.Builder != "pkg" || p.Source != "src" || p.Links["build"] != "https://pkgfleet.example/builds/"+itoa(b.ID) || !strings.Contains(p.Text, b.Version) {
			t.Errorf("payload %s, want event %s of build %d (%s %s) with its link", r.body, event, b.ID, b.Status, b.Version)
		}
		if event == apiv1.EventFailure && p.Reason != "R CMD build failed: no DESCRIPTION" {
			t.Errorf("reason %q, want the detail's first line", p.Reason)
		}
	}
	failed := finish(t, h, "a", registry.StatusFailed)
	check(rc.waitFor(t, 1)[0], apiv1.EventFailure, failed)
	// The source's Slack hook hears of its builder too, in Slack's shape.
	var text map[string]string
	if r := slack.waitFor(t, 1)[0]; json.Unmarshal(r.body, &text) != nil || len(text) != 1 ||
		text["text"] != "pkgfleet: src/pkg 1.0.a failed: R CMD build failed: no DESCRIPTION https://pkgfleet.example/builds/"+itoa(failed.ID) ||
		r.header.Get("X-Hub-Signature-256") != "" {
		t.Errorf("the Slack hook got %s (signature %q), want {\"text\"} alone, unsigned", r.body, r.header.Get("X-Hub-Signature-256"))
	}
	recovered := finish(t, h, "b", registry.StatusSucceeded)
	check(rc.waitFor(t, 2)[1], apiv1.EventRecovery, recovered)
	finish(t, h, "c", registry.StatusSucceeded) // not a recovery: not sent
	again := finish(t, h, "d", registry.StatusFailed)
	got := rc.waitFor(t, 3)
	check(got[2], apiv1.EventFailure, again)
	if len(got) != 3 {
		t.Errorf("the receiver got %d deliveries, want 3 (a success after a success is not sent)", len(got))
	}

	code, list := h.req("GET", "/api/v1/sources/src/git-builders/pkg/hooks", "", h.tok["read"])
	var hooks apiv1.Hooks
	_ = json.Unmarshal([]byte(list), &hooks)
	if code != 200 || len(hooks.Hooks) != 1 || !hooks.Hooks[0].SecretSet || hooks.Hooks[0].URL != rc.URL+"/…" {
		t.Errorf("listing: %d %s, want the hook with secret_set and its URL redacted", code, list)
	}
	testenv.Eventually(t, 30*time.Second, "three delivered attempts in the hook's log", func() bool {
		_, ds := deliveries(t, h, hook)
		return len(ds) == 3 && ds[0].Result == apiv1.DeliveryDelivered && ds[0].Build == again.ID && ds[0].Status == 200
	})
	out, _ := deliveries(t, h, hook)
	// 3 to the builder's hook, 3 to the source's.
	testenv.Eventually(t, 30*time.Second, "/metrics to count 6 delivered attempts", func() bool {
		_, metrics := h.req("GET", "/metrics", "", "")
		return strings.Contains(metrics, `pkgfleet_webhook_outbound_deliveries_total{result="delivered"} 6`)
	})
	// The builds page shows the hook and its last deliveries.
	code, page, _ := h.page("GET", "/", h.tok["read"], nil)
	if code != 200 || !strings.Contains(page, `id="hook-`+hook.ID+`"`) || !strings.Contains(page, `<tr class="delivery-delivered">`) ||
		!strings.Contains(page, "git-builder pkg") {
		t.Errorf("the builds page (%d) does not show the hook and its deliveries", code)
	}
	for what, s := range map[string]string{"the listing": list, "the delivery log": out, "the log": log.String(), "the page": page} {
		if strings.Contains(s, outSecret) || strings.Contains(s, "path-secret") {
			t.Errorf("%s shows the hook's secret or its URL's path:\n%s", what, s)
		}
	}
}

// TestOutboundWebhookRetriesSurviveAnAPIRestart: a receiver that answers
// 500 twice gets the same delivery a third time, and the retry pending
// when the API stops is made by the next API on the same Redis.
func TestOutboundWebhookRetriesSurviveAnAPIRestart(t *testing.T) {
	t.Parallel()
	h := hookFixture(t, nil)
	rc := newReceiver(t, 500, 500)
	hook := createHook(t, h, "/api/v1/sources/src/hooks", apiv1.NewHook{URL: rc.URL, Secret: outSecret, EveryBuild: true})
	var log lockedBuffer
	stop := startDispatcher(t, h.srv, &log)
	b := finish(t, h, "a", registry.StatusSucceeded) // every_build: sent although not a recovery
	rc.waitFor(t, 1)
	stop() // the API goes; its retry is in Redis
	_, ds := deliveries(t, h, hook)
	if len(ds) != 1 || ds[0].Result != apiv1.DeliveryRetrying || ds[0].Status != 500 || ds[0].Error == "" {
		t.Fatalf("after the first attempt the log holds %+v, want one retrying after a 500", ds)
	}

	next, err := NewServer(h.srv.Config, h.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	startDispatcher(t, next, &log)
	got := rc.waitFor(t, 3)
	testenv.Eventually(t, 30*time.Second, "the third attempt to be logged as delivered", func() bool {
		_, ds = deliveries(t, h, hook)
		return len(ds) == 3 && ds[0].Result == apiv1.DeliveryDelivered && ds[0].Attempt == 3
	})
	if len(got) != 3 {
		t.Fatalf("the receiver got %d requests, want 3", len(got))
	}
	for _, r := range got[1:] {
		if !bytes.Equal(r.body, got[0].body) || r.header.Get("Idempotency-Key") != got[0].header.Get("Idempotency-Key") || r.header.Get("Idempotency-Key") == "" {
			t.Errorf("a retry differs from the first attempt (body or Idempotency-Key)")
		}
	}
	var p apiv1.Payload
	if err := json.Unmarshal(got[2].body, &p); err != nil || p.Event != apiv1.EventBuild || p.Build.ID != b.ID {
		t.Errorf("payload %s (%v), want the build event of build %d", got[2].body, err, b.ID)
	}
	if strings.Contains(log.String(), outSecret) {
		t.Error("the log shows the hook's secret")
	}
}

// TestOutboundWebhookURLsKeepToTheOutboundPolicy: what a write token could
// make the API reach through a hook. Loopback, private, link-local and
// metadata addresses (in any spelling) are refused at creation, and a
// name that resolves to one when a delivery is made (DNS rebinding) is
// refused then, with nothing sent; URLs with credentials or other schemes
// are refused; a read token cannot create a hook at all.
func TestOutboundWebhookURLsKeepToTheOutboundPolicy(t *testing.T) {
	t.Parallel()
	h := setupWith(t, true, map[string]string{}) // the default policy: loopback refused
	if code, body := h.req("POST", "/api/v1/sources", `{"name":"src","type":"git"}`, h.tok["write"]); code != 201 {
		t.Fatalf("create source: %d %s", code, body)
	}
	rc := newReceiver(t)
	for _, u := range []string{rc.URL, "http://localhost:1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]:80/",
		"http://10.1.2.3/", "http://0x7f000001/", "http://[::ffff:127.0.0.1]/", "http://100.100.100.200/",
		"file:///etc/passwd", "gopher://example.com/", "http://user:pw@example.com/", "/relative"} {
		body, _ := json.Marshal(apiv1.NewHook{URL: u, Secret: outSecret})
		if code, msg := h.req("POST", "/api/v1/sources/src/hooks", string(body), h.tok["write"]); code != 400 || strings.Contains(msg, outSecret) {
			t.Errorf("hook URL %s: %d %q, want 400 without the secret", u, code, msg)
		}
	}
	if code, _ := h.req("POST", "/api/v1/sources/src/hooks", `{"url":"https://example.com/"}`, h.tok["read"]); code != 403 {
		t.Errorf("a read token creating a hook: %d, want 403", code)
	}
	if _, list := h.req("GET", "/api/v1/sources/src/hooks", "", h.tok["read"]); !strings.Contains(list, `"hooks": []`) {
		t.Errorf("refused hooks were stored: %s", list)
	}

	// A name that resolves to a public address when the hook is made and
	// to the receiver's loopback address when the delivery is.
	var rebound atomic.Bool
	h.srv.Git.Net.Lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		if rebound.Load() {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
	}
	port := rc.URL[strings.LastIndex(rc.URL, ":")+1:]
	hook := createHook(t, h, "/api/v1/sources/src/hooks", apiv1.NewHook{URL: "http://rebind.example:" + port + "/", EveryBuild: true})
	rebound.Store(true)
	if err := h.srv.Registry.CreateBuilder(context.Background(), &registry.Builder{Source: "src", Name: "pkg", Language: "r",
		URL: "https://git.invalid/pkg.git", BuildTrigger: registry.TriggerCommits, CloneDepth: 1}); err != nil {
		t.Fatal(err)
	}
	var log lockedBuffer
	startDispatcher(t, h.srv, &log)
	finish(t, h, "a", registry.StatusFailed)
	testenv.Eventually(t, 30*time.Second, "the delivery to be refused", func() bool {
		_, ds := deliveries(t, h, hook)
		return len(ds) == 1 && ds[0].Result == apiv1.DeliveryRefused && strings.Contains(ds[0].Error, "outbound policy")
	})
	if n := len(rc.requests()); n != 0 {
		t.Errorf("the receiver behind a rebound name got %d requests", n)
	}
}

// TestHooksGoWithTheirBuilderOrSource: deleting a builder deletes its
// hooks (not its source's), and a builder made again under the same name
// starts without them.
func TestHooksGoWithTheirBuilderOrSource(t *testing.T) {
	t.Parallel()
	h := hookFixture(t, nil)
	createHook(t, h, "/api/v1/sources/src/git-builders/pkg/hooks", apiv1.NewHook{URL: "https://hooks.example/a"})
	createHook(t, h, "/api/v1/sources/src/hooks", apiv1.NewHook{URL: "https://hooks.example/b"})
	if code, msg := h.req("DELETE", "/api/v1/sources/src/git-builders/pkg", "", h.tok["write"]); code != 204 {
		t.Fatalf("delete builder: %d %s", code, msg)
	}
	if err := h.srv.Registry.CreateBuilder(context.Background(), &registry.Builder{Source: "src", Name: "pkg", Language: "r",
		URL: "https://git.invalid/pkg.git", BuildTrigger: registry.TriggerCommits, CloneDepth: 1}); err != nil {
		t.Fatal(err)
	}
	_, builder := h.req("GET", "/api/v1/sources/src/git-builders/pkg/hooks", "", h.tok["read"])
	_, source := h.req("GET", "/api/v1/sources/src/hooks", "", h.tok["read"])
	if !strings.Contains(builder, `"hooks": []`) || strings.Count(source, `"id"`) != 1 {
		t.Errorf("after the builder was deleted and made again: its hooks %s, the source's %s", builder, source)
	}
}

// TestTwoAPIReplicasSendEachDeliveryOnce: two API replicas on one Redis
// both run their dispatcher; each finished build reaches the receiver
// once.
func TestTwoAPIReplicasSendEachDeliveryOnce(t *testing.T) {
	t.Parallel()
	h := hookFixture(t, nil)
	rc := newReceiver(t)
	hook := createHook(t, h, "/api/v1/sources/src/hooks", apiv1.NewHook{URL: rc.URL, EveryBuild: true})
	other, err := NewServer(h.srv.Config, h.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	var log lockedBuffer
	startDispatcher(t, h.srv, &log)
	startDispatcher(t, other, &log)
	const n = 6
	for i := range n {
		finish(t, h, string(rune('a'+i)), registry.StatusSucceeded)
	}
	testenv.Eventually(t, 30*time.Second, "every delivery to be settled", func() bool {
		_, ds := deliveries(t, h, hook)
		due, _ := h.rdb.ZCard(context.Background(), "pkgfleet:outhooks:due").Result()
		finished, _ := h.rdb.LLen(context.Background(), registry.KeyFinished).Result()
		return len(ds) == n && due == 0 && finished == 0
	})
	seen := map[string]int{}
	for _, r := range rc.requests() {
		seen[r.header.Get("Idempotency-Key")]++
	}
	if len(seen) != n || len(rc.requests()) != n {
		t.Errorf("the receiver got %d requests for %d deliveries, want %d once each", len(rc.requests()), len(seen), n)
	}
}

// TestASourceHoldsAtMostMaxPerSourceHooks: one more is 409, so a write
// token cannot make one failure a flood of requests.
func TestASourceHoldsAtMostMaxPerSourceHooks(t *testing.T) {
	t.Parallel()
	h := hookFixture(t, map[string]string{"PKGFLEET_HTTP_WRITEBURST": "100"})
	for i := range webhook.MaxPerSource {
		path := "/api/v1/sources/src/hooks"
		if i%2 == 1 {
			path = "/api/v1/sources/src/git-builders/pkg/hooks" // a builder's count towards its source's
		}
		createHook(t, h, path, apiv1.NewHook{URL: fmt.Sprintf("https://93.184.216.34/%d", i)})
	}
	if code, msg := h.req("POST", "/api/v1/sources/src/hooks", `{"url":"https://93.184.216.34/one-more"}`, h.tok["write"]); code != 409 {
		t.Errorf("hook %d: %d %s, want 409", webhook.MaxPerSource+1, code, msg)
	}
}

// TestAnUnreadableFinishedRecordDoesNotHoldUpTheOthers: a finished build
// whose record no longer parses is skipped, and the builds after it are
// delivered.
func TestAnUnreadableFinishedRecordDoesNotHoldUpTheOthers(t *testing.T) {
	t.Parallel()
	h := hookFixture(t, nil)
	rc := newReceiver(t)
	createHook(t, h, "/api/v1/sources/src/hooks", apiv1.NewHook{URL: rc.URL, EveryBuild: true})
	bad := finish(t, h, "a", registry.StatusFailed)
	if err := h.rdb.Set(context.Background(), "pkgfleet:build:"+itoa(bad.ID), "{not json", 0).Err(); err != nil {
		t.Fatal(err)
	}
	good := finish(t, h, "b", registry.StatusSucceeded)
	var log lockedBuffer
	startDispatcher(t, h.srv, &log)
	var p apiv1.Payload
	if r := rc.waitFor(t, 1)[0]; json.Unmarshal(r.body, &p) != nil || p.Build.ID != good.ID {
		t.Errorf("the receiver got %s, want build %d's delivery", r.body, good.ID)
	}
}
