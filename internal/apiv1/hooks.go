package apiv1

import "time"

// Outbound webhook events: what a hook is told about.
const (
	EventFailure  = "failure"  // a build failed
	EventRecovery = "recovery" // the first success after a failure of the same builder
	EventBuild    = "build"    // any other finished build (hooks with EveryBuild only)
)

// Results of one delivery attempt.
const (
	DeliveryDelivered = "delivered" // the receiver answered 2xx
	DeliveryRetrying  = "retrying"  // it did not; another attempt is scheduled
	DeliveryFailed    = "failed"    // the last attempt did not; given up
	DeliveryRefused   = "refused"   // the outbound policy refused the address; not retried
)

// Hook is an outbound webhook: where pkgfleet tells of finished builds of
// a source's builders, or of one builder. Its secret is write-only: Hook
// only says whether one is set.
type Hook struct {
	ID      string `json:"id"`
	Source  string `json:"source"`
	Builder string `json:"builder,omitempty"` // "": every builder of the source
	// URL is shown as its origin and a redacted path (https://host/…):
	// some receivers (Slack's) hold their secret in the path.
	URL        string    `json:"url"`
	EveryBuild bool      `json:"every_build,omitempty"` // every finished build, not only failures and recoveries
	Slack      bool      `json:"slack,omitempty"`       // a Slack-compatible {"text": …} body
	SecretSet  bool      `json:"secret_set"`
	CreatedAt  time.Time `json:"created_at"`
}

// NewHook is the body of POST …/hooks.
type NewHook struct {
	URL string `json:"url"`
	// Secret signs each delivery (X-Hub-Signature-256: sha256=HMAC-SHA256
	// of the body); 16 to 1024 characters, or "" to send unsigned.
	Secret     string `json:"secret,omitempty"`
	EveryBuild bool   `json:"every_build,omitempty"`
	Slack      bool   `json:"slack,omitempty"`
}

// HookDelivery is one attempt to deliver one event, as a hook's delivery
// log lists it (newest first).
type HookDelivery struct {
	ID      string    `json:"id"` // the Idempotency-Key header: the same for each attempt of one event
	Build   int64     `json:"build"`
	Event   string    `json:"event"`
	Attempt int       `json:"attempt"`
	Result  string    `json:"result"`           // Delivery*
	Status  int       `json:"status,omitempty"` // the receiver's HTTP status
	Error   string    `json:"error,omitempty"`  // why it failed, without the URL
	At      time.Time `json:"at"`
}

// Envelopes of the hooks' answers.
type (
	// Hooks answers GET …/hooks.
	Hooks struct {
		Hooks []Hook `json:"hooks"`
	}
	// HookDeliveries answers GET …/hooks/{id}/deliveries.
	HookDeliveries struct {
		Deliveries []HookDelivery `json:"deliveries"`
	}
)

// Payload is the JSON body of a delivery (unless the hook is Slack's).
type Payload struct {
	Event   string `json:"event"`
	Source  string `json:"source"`
	Builder string `json:"builder"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"` // the build's detail, for a failure
	Version string `json:"version,omitempty"`
	Build   *Build `json:"build"`
	// Links are absolute when HTTP.PublicURL is set, else absent.
	Links map[string]string `json:"links,omitempty"`
	Text  string            `json:"text"` // one line for people (what Slack shows)
}
