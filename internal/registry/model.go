// Package registry keeps pkgfleet's state in Redis: sources, git-builders,
// builds (with their logs and artifact lists) and the per-commit claim that
// makes a poll, a webhook and a manual run of one sha build once.
//
// It validates what it stores and guarantees that a rejected request
// stores nothing. It does not enqueue work (internal/queue does) and it
// does not touch Git or the file system.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/door"
)

// Source types, as PPM names them.
const (
	TypeGit       = "git"        // R packages
	TypeGitPython = "git-python" // Python packages
)

// Languages, which name the build queues.
const (
	LangR      = "r"
	LangPython = "python"
)

// Build triggers of a git-builder.
const (
	TriggerCommits = "commits"
	TriggerTags    = "tags"
)

// Build statuses.
const (
	StatusQueued    = "queued"
	StatusWaiting   = "waiting"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCanceled  = "canceled"
)

// Terminal reports whether a build in status s will not change again.
func Terminal(s string) bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCanceled
}

// Errors a caller can tell apart (the API maps them to status codes).
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflict")
)

// ValidationError is bad input; its message is safe to show the user.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &ValidationError{Msg: fmt.Sprintf(format, args...)}
}

// Source is a named group of builders of one type.
type Source struct {
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	CreatedAt time.Time `json:"created_at"`
}

// Language is the build language of the source's packages.
func (s Source) Language() string { return LanguageOf(s.Type) }

// LanguageOf maps a source type to its language ("" if unknown).
func LanguageOf(sourceType string) string {
	switch sourceType {
	case TypeGit:
		return LangR
	case TypeGitPython:
		return LangPython
	}
	return ""
}

// Builder is a git-builder: what to follow in which repository.
type Builder struct {
	Source            string   `json:"source"`
	Name              string   `json:"name"`
	Language          string   `json:"language"`
	URL               string   `json:"url"`
	Branch            string   `json:"branch,omitempty"`
	BuildTrigger      string   `json:"build_trigger"`
	SubDir            string   `json:"sub_dir,omitempty"`
	CloneDepth        int      `json:"clone_depth"`
	RecurseSubmodules int      `json:"recurse_submodules"`
	TagPattern        string   `json:"tag_pattern,omitempty"`
	PollInterval      Duration `json:"poll_interval,omitempty"`
	Credential        string   `json:"credential,omitempty"` // a credential's name, never its secret
	// PythonIndexURL and RRepositoryURL override Git.PythonIndexURL and
	// Git.RRepositoryURL for this builder (internal/door); they carry no
	// credentials (those stay in the workers' settings).
	PythonIndexURL string `json:"python_index_url,omitempty"`
	RRepositoryURL string `json:"r_repository_url,omitempty"`
	// BuildVignettes has R CMD build build the vignettes, with what they
	// need installed from the R repository through the door.
	BuildVignettes bool      `json:"build_vignettes,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`

	// InitialTags is how many of the newest matching tags a new tag
	// builder builds (nil: 1); older tags are only recorded as seen.
	InitialTags *int `json:"initial_tags,omitempty"`
	// WebhookSecretSet says whether webhooks can trigger this builder;
	// the secret itself is stored apart and never returned.
	WebhookSecretSet bool `json:"webhook_secret_set"`

	// The poller's view, filled in by the API for output (not stored).
	LastPollAt *time.Time `json:"last_poll_at,omitempty"`
	NextPollAt *time.Time `json:"next_poll_at,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
}

// Key is the builder's unique "source/name".
func (b *Builder) Key() string { return b.Source + "/" + b.Name }

// Build is one attempt series at one (builder, ref, commit sha).
type Build struct {
	ID          int64  `json:"id"`
	Source      string `json:"source"`
	Builder     string `json:"builder"`
	Language    string `json:"language"`
	Ref         string `json:"ref"`
	SHA         string `json:"commit_sha"`
	Trigger     string `json:"trigger"`
	Status      string `json:"status"`
	Detail      string `json:"detail,omitempty"`
	Attempts    int    `json:"attempts"`
	MaxAttempts int    `json:"max_attempts"`
	Package     string `json:"package,omitempty"`
	Version     string `json:"version,omitempty"`
	Sandbox     string `json:"sandbox,omitempty"`
	// SandboxTier is the tier of the sandbox that ran the last attempt
	// ("full", "masked-proc"), or "unsandboxed"; empty before one started.
	SandboxTier string     `json:"sandbox_tier"`
	Worker      string     `json:"worker,omitempty"`
	Artifacts   []Artifact `json:"artifacts"`
	// Fetched lists what the build fetched through its door to a package
	// index (internal/door): its build requirements' provenance.
	Fetched    []door.Fetched `json:"fetched,omitempty"`
	CreatedAt  time.Time      `json:"created_at"`
	StartedAt  *time.Time     `json:"started_at,omitempty"`
	FinishedAt *time.Time     `json:"finished_at,omitempty"`
}

// Artifact is one file a build produced.
type Artifact struct {
	File   string `json:"file"`
	Kind   string `json:"kind"` // "source" (R tarball), "sdist", "wheel"
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Duration is a time.Duration written as "5m" in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte(`""`), nil
	}
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads "5m" (or "" for the default).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`must be a duration string like "5m"`)
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (like 90s, 5m, 1h)", s)
	}
	*d = Duration(v)
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ValidateName checks a source or builder name.
func ValidateName(what, name string) error {
	switch {
	case name == "":
		return invalid("%s is required", what)
	case len(name) > 100:
		return invalid("%s must be at most 100 characters", what)
	case !nameRE.MatchString(name):
		return invalid("%s %q may contain only letters, digits, '.', '_' and '-'", what, name)
	case name == "." || name == "..":
		return invalid("%s must not be %q", what, name)
	}
	return nil
}

// ValidateSubDir checks that a sub-directory stays inside the repository.
func ValidateSubDir(dir string) error {
	if dir == "" {
		return nil
	}
	if strings.HasPrefix(dir, "/") {
		return invalid("sub_dir must be relative to the repository root")
	}
	if strings.ContainsAny(dir, "\\\x00\n\r") {
		return invalid("sub_dir contains a forbidden character")
	}
	for _, part := range strings.Split(dir, "/") {
		if part == ".." {
			return invalid("sub_dir must not contain '..'")
		}
		if strings.HasPrefix(part, "-") {
			return invalid("sub_dir parts must not start with '-'")
		}
	}
	return nil
}
