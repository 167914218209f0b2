package fleettest_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/leader"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

const secret = "s3cret-webhook-token-0123456789"

// poller runs the API's poller with a fast tick until the test ends.
func (f *fleet) poller() {
	p := f.srv.Poller()
	p.Tick = 20 * time.Millisecond
	p.Lease = func(e *leader.Elector) { e.TTL, e.RetryEvery = time.Second, 50*time.Millisecond }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	f.t.Cleanup(func() { cancel(); <-done })
}

// hook posts a webhook for builder src/name and returns the status code.
func (f *fleet) hook(provider, name string, payload any, header map[string]string) int {
	f.t.Helper()
	body, _ := json.Marshal(payload)
	req, _ := http.NewRequest("POST", f.api.URL+"/api/v1/hooks/"+provider+"/src/"+name, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		if v == "SIGN" {
			mac := hmac.New(sha256.New, []byte(secret))
			mac.Write(body)
			v = "sha256=" + hex.EncodeToString(mac.Sum(nil))
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(out), secret) {
		f.t.Fatalf("a webhook response contains the secret: %s", out)
	}
	return resp.StatusCode
}

// hooked makes a commit builder with a webhook secret and an hour-long
// poll interval, so only its first poll and webhooks build it.
func (f *fleet) hooked(name string) (repo string) {
	f.t.Helper()
	dir, _ := testenv.Repo(f.t, map[string]string{"DESCRIPTION": "Package: " + name + "\nVersion: 1\n"})
	f.do("POST", "/api/v1/sources", map[string]string{"name": "src", "type": "git"}, 201)
	body := f.do("POST", "/api/v1/sources/src/git-builders", map[string]any{
		"name": name, "url": "file://" + dir, "branch": "main", "poll_interval": "1h", "webhook_secret": secret}, 201)
	if strings.Contains(string(body), secret) || !strings.Contains(string(body), `"webhook_secret_set": true`) {
		f.t.Fatalf("create answered %s: want webhook_secret_set and no secret", body)
	}
	return dir
}

func (f *fleet) builds(name string) []*registry.Build {
	f.t.Helper()
	list, err := f.reg.Builds(context.Background(), registry.Filter{Source: "src", Builder: name})
	if err != nil {
		f.t.Fatal(err)
	}
	return list
}

func TestWebhookWithABadSecretIs401AndQueuesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	repo := f.hooked("h")
	other, _ := testenv.Repo(t, map[string]string{"f": "x"})
	f.do("POST", "/api/v1/sources/src/git-builders", map[string]any{"name": "nosecret", "url": "file://" + other}, 201)
	payload := map[string]any{"repository": map[string]any{"clone_url": "file://" + repo}}
	cases := []struct {
		provider, builder string
		payload           any
		header            map[string]string
	}{
		{"github", "h", payload, map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("ab", 32)}},
		{"github", "h", payload, nil},
		{"gitlab", "h", map[string]any{"project": map[string]any{"git_http_url": "file://" + repo}}, map[string]string{"X-Gitlab-Token": "wrong-token-0123456789"}},
		{"generic", "h", map[string]any{"url": "file://" + repo}, map[string]string{"Authorization": "Bearer nope"}},
		// The right secret for another builder, which has none.
		{"generic", "nosecret", map[string]any{"url": "file://" + other}, map[string]string{"Authorization": "Bearer " + secret}},
		// The right secret for a builder that does not exist.
		{"generic", "absent", map[string]any{"url": "file://" + other}, map[string]string{"Authorization": "Bearer " + secret}},
	}
	for _, c := range cases {
		if got := f.hook(c.provider, c.builder, c.payload, c.header); got != http.StatusUnauthorized {
			t.Fatalf("%s webhook with %v: status %d, want 401", c.provider, c.header, got)
		}
	}
	if n := f.rdb.SCard(context.Background(), "pkgfleet:poll:now").Val(); n != 0 {
		t.Fatalf("%d polls requested by rejected webhooks", n)
	}
	if n := len(f.builds("h")) + len(f.builds("nosecret")); n != 0 {
		t.Fatalf("%d builds queued by rejected webhooks", n)
	}
}

func TestWebhooksTriggerABuildOfThePushedCommitOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	repo := f.hooked("h")
	f.poller()
	testenv.Eventually(t, 20*time.Second, "the first poll to build the head", func() bool { return len(f.builds("h")) == 1 })

	for i, c := range []struct {
		provider string
		payload  any
		header   map[string]string
	}{
		// Larger than HTTP.MaxBodySize (1MiB): a push of many commits.
		{"github", map[string]any{"repository": map[string]any{"clone_url": "file://" + repo + ".git", "html_url": "https://example.invalid/x"},
			"commits": strings.Repeat("x", 2<<20)},
			map[string]string{"X-Hub-Signature-256": "SIGN", "X-GitHub-Event": "push"}},
		{"gitlab", map[string]any{"project": map[string]any{"git_http_url": "file://" + repo}}, map[string]string{"X-Gitlab-Token": secret}},
		{"generic", map[string]any{"urls": []string{"file://" + repo + "/"}}, map[string]string{"Authorization": "Bearer " + secret}},
	} {
		sha := testenv.Commit(t, repo, map[string]string{"f": fmt.Sprint(i)}, "push")
		if got := f.hook(c.provider, "h", c.payload, c.header); got != http.StatusAccepted {
			t.Fatalf("%s webhook: status %d, want 202", c.provider, got)
		}
		var b *registry.Build
		testenv.Eventually(t, 20*time.Second, c.provider+" webhook to build the pushed commit", func() bool {
			list := f.builds("h")
			b = list[0]
			return len(list) == i+2 && b.SHA == sha
		})
		if b.Trigger != "webhook" {
			t.Fatalf("build of the pushed commit has trigger %q, want webhook", b.Trigger)
		}
		// A manual run and another webhook of the same commit do not
		// build it again.
		var run struct{ Builds []registry.Build }
		json.Unmarshal(f.do("POST", "/api/v1/sources/src/git-builders/h/run", map[string]any{}, 202), &run)
		if run.Builds[0].ID != b.ID {
			t.Fatalf("run after the webhook made build %d, want the webhook's build %d", run.Builds[0].ID, b.ID)
		}
		f.hook(c.provider, "h", c.payload, c.header)
	}
	body := f.do("GET", "/api/v1/sources/src/git-builders/h", nil, 200)
	var bl registry.Builder
	json.Unmarshal(body, &bl)
	if strings.Contains(string(body), secret) || !bl.WebhookSecretSet || bl.LastPollAt == nil || bl.NextPollAt == nil {
		t.Fatalf("builder = %s; want webhook_secret_set, last/next poll times and no secret", body)
	}
	// One more webhook, and its poll done: a duplicate would show by now.
	f.hook("gitlab", "h", map[string]any{"project": map[string]any{"git_http_url": "file://" + repo}}, map[string]string{"X-Gitlab-Token": secret})
	testenv.Eventually(t, 20*time.Second, "the webhook's poll", func() bool {
		var now registry.Builder
		json.Unmarshal(f.do("GET", "/api/v1/sources/src/git-builders/h", nil, 200), &now)
		return now.LastPollAt != nil && now.LastPollAt.After(*bl.LastPollAt)
	})
	if n := len(f.builds("h")); n != 4 {
		t.Fatalf("%d builds, want 4 (the first head and one per pushed commit)", n)
	}
}
