package apiv1

import "time"

// Credential types.
const (
	CredentialSSH   = "ssh"
	CredentialHTTPS = "https"
)

// CredentialInfo is what may be shown about a git credential: never its
// secrets.
type CredentialInfo struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Hosts are where the credential may be sent, each scheme://host:port
	// with the host possibly *.domain (one subdomain label). A builder may
	// use it only for a URL one of them matches; git sends it nowhere
	// else, redirects included.
	Hosts []string `json:"hosts"`
	// KnownHosts (ssh) are the known_hosts lines its servers' host keys
	// must match: public, shown so an admin can check them.
	KnownHosts string    `json:"known_hosts,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// The envelopes of the API's answers. A list is never null.
type (
	// Error is every error answer.
	Error struct {
		Error string `json:"error"`
	}
	// Sources answers GET /api/v1/sources.
	Sources struct {
		Sources []Source `json:"sources"`
	}
	// Builders answers GET /api/v1/sources/{source}/git-builders, one
	// page (?limit=, default 100, at most 1000) in name order; NextCursor,
	// when set, is the ?cursor= of the next page.
	Builders struct {
		Builders   []*Builder `json:"git_builders"`
		NextCursor string     `json:"next_cursor,omitempty"`
	}
	// Builds answers GET /api/v1/builds.
	Builds struct {
		Builds []*Build `json:"builds"`
	}
	// Run answers a run or rerun of a git-builder: the builds it asked
	// for, of which New were queued by this request (the others already
	// existed for the same commit).
	Run struct {
		Builds []*Build `json:"builds"`
		New    int      `json:"new"`
	}
	// Workers answers GET /api/v1/workers.
	Workers struct {
		Workers []Worker `json:"workers"`
	}
	// NamespaceBudget answers GET /api/v1/namespaces.
	NamespaceBudget struct {
		Budget  Budget             `json:"budget"`
		Workers []WorkerNamespaces `json:"workers"`
	}
	// Credentials answers GET /api/v1/git-credentials.
	Credentials struct {
		Credentials []CredentialInfo `json:"git_credentials"`
	}
)
