package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/pkgfleet/pkgfleet/internal/poller"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// Webhooks ask for an immediate poll of the git-builders of the pushed
// repository; the poll decides what to build, so a webhook, a poll and a
// manual run of one commit build it once. They are not behind token auth:
// each is checked against the webhook_secret of the builders it names, and
// a request that matches none is 401 and triggers nothing.

// webhookProviders maps a route to how it proves the secret.
var webhookProviders = map[string]func(r *http.Request, body []byte, secret string) bool{
	// GitHub: X-Hub-Signature-256: sha256=HMAC-SHA256(body, secret).
	"github": func(r *http.Request, body []byte, secret string) bool {
		sig, ok := strings.CutPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256=")
		got, err := hex.DecodeString(sig)
		if !ok || err != nil {
			return false
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		return hmac.Equal(got, mac.Sum(nil))
	},
	// GitLab: X-Gitlab-Token: secret.
	"gitlab": func(r *http.Request, _ []byte, secret string) bool {
		return equalSecret(r.Header.Get("X-Gitlab-Token"), secret)
	},
	// Anything else: Authorization: Bearer secret.
	"generic": func(r *http.Request, _ []byte, secret string) bool {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		return ok && equalSecret(strings.TrimSpace(tok), secret)
	},
}

// webhookBodyLimit lets webhook payloads be as large as GitHub sends
// (25 MB: a push of many commits), whatever HTTP.MaxBodySize says; the
// signature covers the whole body, so it cannot be cut.
func webhookBodyLimit(r *http.Request, limit int64) int64 {
	if strings.HasPrefix(r.URL.Path, "/api/v1/hooks/") {
		return max(limit, 25<<20)
	}
	return limit
}

func equalSecret(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (s *Server) webhook(provider string) func(w http.ResponseWriter, r *http.Request) error {
	verify := webhookProviders[provider]
	return func(w http.ResponseWriter, r *http.Request) error {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		urls, err := repositoryURLs(r, body)
		if err != nil {
			return err
		}
		ctx := r.Context()
		builders, err := s.Registry.Builders(ctx, "")
		if err != nil {
			return err
		}
		secrets, err := s.Registry.WebhookSecrets(ctx)
		if err != nil {
			return err
		}
		var keys []string
		for _, b := range builders {
			if !urls[canonicalRepo(b.URL)] || secrets[b.Key()] == "" {
				continue
			}
			secret, err := s.Creds.Unseal("webhook-secret\x00"+b.Key(), secrets[b.Key()])
			if err != nil {
				s.Log.Warn("webhook secret unreadable", "builder", b.Key(), "error", err)
				continue
			}
			if verify(r, body, secret) {
				keys = append(keys, b.Key())
			}
		}
		if len(keys) == 0 {
			s.Metrics.Webhook(provider, "rejected")
			s.Log.Warn("webhook rejected", "provider", provider, "remote", r.RemoteAddr)
			return errorf(http.StatusUnauthorized, "the request does not carry the webhook secret of any git-builder of this repository")
		}
		if err := poller.PollNow(ctx, s.Enqueuer.Redis, keys...); err != nil {
			s.Metrics.Webhook(provider, "error")
			return err
		}
		s.Metrics.Webhook(provider, "accepted")
		s.Log.Info("webhook: polling", "provider", provider, "git_builders", strings.Join(keys, ","))
		writeJSON(w, http.StatusAccepted, map[string]any{"polling": keys})
		return nil
	}
}

// repositoryURLs collects the repository URLs a payload names (GitHub's
// repository.*_url, GitLab's project.* and repository.*, or a generic
// {"url": …} / {"urls": […]}), canonicalised.
func repositoryURLs(r *http.Request, body []byte) (map[string]bool, error) {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		// GitHub's form content type: the JSON is the "payload" field.
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "malformed form body")
		}
		body = []byte(form.Get("payload"))
	}
	var p struct {
		Repository map[string]any `json:"repository"`
		Project    map[string]any `json:"project"`
		URL        string         `json:"url"`
		URLs       []string       `json:"urls"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, errorf(http.StatusBadRequest, "the webhook payload is not a JSON object")
	}
	out := map[string]bool{}
	add := func(u string) {
		if c := canonicalRepo(u); c != "" {
			out[c] = true
		}
	}
	add(p.URL)
	for _, u := range p.URLs {
		add(u)
	}
	for _, m := range []map[string]any{p.Repository, p.Project} {
		for _, k := range []string{"clone_url", "ssh_url", "git_url", "html_url", "svn_url", "url",
			"git_http_url", "git_ssh_url", "web_url", "http_url", "homepage"} {
			if v, ok := m[k].(string); ok {
				add(v)
			}
		}
	}
	if len(out) == 0 {
		return nil, errorf(http.StatusBadRequest, "the webhook payload names no repository URL")
	}
	return out, nil
}

// canonicalRepo reduces the forms of one repository's URL to one string,
// "host/path" in lower case without ".git", so that
// https://github.com/Org/Repo, git@github.com:org/repo.git and
// ssh://git@github.com/org/repo match.
func canonicalRepo(raw string) string {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return ""
	}
	var host, p string
	if !strings.Contains(raw, "://") {
		// scp-like: user@host:path
		at := strings.LastIndex(raw, "@")
		h, rest, ok := strings.Cut(raw[at+1:], ":")
		if !ok {
			return ""
		}
		host, p = h, rest
	} else {
		u, err := url.Parse(raw)
		if err != nil {
			return ""
		}
		host, p = u.Hostname(), u.Path
	}
	p = path.Clean("/" + p)
	p = strings.TrimSuffix(strings.TrimSuffix(p, "/"), ".git")
	return strings.ToLower(host + p)
}

// validWebhookSecret checks a new secret ("" removes it).
func validWebhookSecret(secret string) error {
	if secret == "" {
		return nil
	}
	if len(secret) < 16 || len(secret) > 1024 {
		return &registry.ValidationError{Msg: "webhook_secret must be 16 to 1024 characters (use a random string)"}
	}
	for _, c := range secret {
		if c < 0x21 || c == 0x7f {
			return &registry.ValidationError{Msg: "webhook_secret must not contain spaces or control characters"}
		}
	}
	return nil
}
