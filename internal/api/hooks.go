package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/pkgfleet/pkgfleet/internal/poller"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// Webhooks ask for an immediate poll of one git-builder; the poll decides
// what to build, so a webhook, a poll and a manual run of one commit build
// it once. They are not behind token auth: the URL names the builder
// (/api/v1/hooks/{provider}/{source}/{name}) and the request must prove
// that builder's webhook_secret.
//
// An unauthenticated sender can reach this, so it is bounded before it
// is trusted: the body is capped (HTTP.WebhookMaxBodySize) and streamed
// through the HMAC, never held nor parsed; one Redis field (the named
// builder's secret) is read, never every builder's; a rejection is
// counted in a metric and logged at debug level only, so it cannot fill
// the log; and a delivery id seen before is refused (replays).

const webhookPrefix = "/api/v1/hooks/"

// webhookProviders maps a route to how it proves the secret. A check
// that needs the body reads it from body, which is capped.
var webhookProviders = map[string]func(r *http.Request, body io.Reader, secret string) (bool, error){
	// GitHub (and Gitea, Forgejo): X-Hub-Signature-256: sha256=HMAC-SHA256(body, secret).
	"github": func(r *http.Request, body io.Reader, secret string) (bool, error) {
		sig, ok := strings.CutPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256=")
		got, err := hex.DecodeString(sig)
		if !ok || err != nil || len(got) != sha256.Size {
			return false, nil
		}
		mac := hmac.New(sha256.New, []byte(secret))
		if _, err := io.Copy(mac, body); err != nil {
			return false, err
		}
		return hmac.Equal(got, mac.Sum(nil)), nil
	},
	// GitLab: X-Gitlab-Token: secret.
	"gitlab": func(r *http.Request, _ io.Reader, secret string) (bool, error) {
		return equalSecret(r.Header.Get("X-Gitlab-Token"), secret), nil
	},
	// Anything else: Authorization: Bearer secret.
	"generic": func(r *http.Request, _ io.Reader, secret string) (bool, error) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		return ok && equalSecret(strings.TrimSpace(tok), secret), nil
	},
}

// deliveryHeaders name a delivery's id, in order of preference: GitHub's,
// Gitea's and Forgejo's, then GitLab's Idempotency-Key (kept across its
// retries) before its X-Gitlab-Event-UUID; a generic sender may send
// Idempotency-Key.
var deliveryHeaders = []string{"X-GitHub-Delivery", "X-Gitea-Delivery", "X-Forgejo-Delivery", "Idempotency-Key", "X-Gitlab-Event-UUID"}

// maxDeliveryID bounds the id a sender may name (GitHub's is a 36-byte UUID).
const maxDeliveryID = 200

func deliveryID(r *http.Request) string {
	for _, h := range deliveryHeaders {
		if v := strings.TrimSpace(r.Header.Get(h)); v != "" {
			return v
		}
	}
	return ""
}

func equalSecret(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// errWebhookRejected is the one answer to a request that proves no
// secret, whether the builder exists, has no secret or the proof is wrong,
// so that the answer does not tell which builders exist.
var errWebhookRejected = errorf(http.StatusUnauthorized, "the request does not carry the webhook secret of this git-builder")

func (s *Server) webhook(provider string) func(w http.ResponseWriter, r *http.Request) error {
	verify := webhookProviders[provider]
	limit := int64(s.Config.HTTP.WebhookMaxBodySize)
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		source, name := r.PathValue("source"), r.PathValue("name")
		if r.ContentLength > limit {
			return s.rejectWebhook(provider, r, &http.MaxBytesError{Limit: limit})
		}
		id := deliveryID(r)
		if len(id) > maxDeliveryID {
			return s.rejectWebhook(provider, r, errorf(http.StatusBadRequest, "the delivery id is longer than %d bytes", maxDeliveryID))
		}
		sealed, err := s.Registry.WebhookSecret(ctx, source, name)
		if err != nil {
			return err
		}
		if sealed == "" {
			return s.rejectWebhook(provider, r, errWebhookRejected)
		}
		key := source + "/" + name
		secret, err := s.Creds.Unseal("webhook-secret\x00"+key, sealed)
		if err != nil {
			// The operator's key changed; not the sender's fault, but a
			// sender can repeat it, so it is not logged per request.
			return s.rejectWebhook(provider, r, errorf(http.StatusInternalServerError, "the webhook secret of this git-builder cannot be read; see Git.CredentialKeyFile"))
		}
		ok, err := verify(r, r.Body, secret) // capped by limitBody
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return s.rejectWebhook(provider, r, err)
		case err != nil:
			return err
		case !ok:
			return s.rejectWebhook(provider, r, errWebhookRejected)
		}
		// Authenticated: only now is the delivery id remembered, so that a
		// stranger cannot use up ids the sender will send.
		if id != "" {
			first, err := s.Registry.FirstDelivery(ctx, source, name, id, s.Config.HTTP.WebhookReplayWindow)
			if err != nil {
				return err
			}
			if !first {
				s.Metrics.Webhook(provider, "replayed")
				return errorf(http.StatusConflict, "delivery %q was received before; a replay triggers nothing", id)
			}
		}
		if err := poller.PollNow(ctx, s.Enqueuer.Redis, key); err != nil {
			s.Metrics.Webhook(provider, "error")
			if id != "" {
				_ = s.Registry.ForgetDelivery(ctx, source, name, id)
			}
			return err
		}
		s.Metrics.Webhook(provider, "accepted")
		s.Log.Info("webhook: polling", "provider", provider, "git_builder", key, "delivery", id)
		writeJSON(w, http.StatusAccepted, map[string]any{"polling": []string{key}})
		return nil
	}
}

// rejectWebhook counts a refused webhook and logs it at debug level only:
// anyone can send them, and a WARN line each would let them fill the log.
func (s *Server) rejectWebhook(provider string, r *http.Request, err error) error {
	s.Metrics.Webhook(provider, "rejected")
	s.Log.Debug("webhook rejected", "provider", provider, "path", r.URL.Path, "remote", r.RemoteAddr, "error", err)
	return err
}

// legacyWebhook answers the routes that named no builder (the builder was
// found from repository URLs in the body, which meant parsing an
// unauthenticated body and reading every builder's secret): 410, without
// reading the body, naming the URL to configure instead.
func legacyWebhook(provider string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		return errorf(http.StatusGone, "webhook URLs name their git-builder: POST /api/v1/hooks/%s/SOURCE/BUILDER", provider)
	}
}

// validSecret checks a new secret of the named field ("" removes it or
// sets none): a builder's webhook_secret, an outbound hook's secret.
func validSecret(field, secret string) error {
	if secret == "" {
		return nil
	}
	if len(secret) < 16 || len(secret) > 1024 {
		return &registry.ValidationError{Msg: field + " must be 16 to 1024 characters (use a random string)"}
	}
	for _, c := range secret {
		if c < 0x21 || c == 0x7f {
			return &registry.ValidationError{Msg: field + " must not contain spaces or control characters"}
		}
	}
	return nil
}
