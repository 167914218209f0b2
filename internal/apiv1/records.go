// Package apiv1 holds the shapes of pkgfleet's HTTP API, /api/v1: the
// records (sources, git-builders, builds, workers, credentials) as the
// server writes them in JSON and the CLI reads them, the envelopes of
// its lists, and the names of statuses, triggers and languages. The
// registry stores its records in these shapes.
//
// It is a leaf: it imports only the standard library, so the CLI links
// neither Redis nor the sandbox. It does not validate or store anything
// (internal/registry does) and serves nothing (internal/api does).
package apiv1

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"
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

// Source is a named group of builders of one type.
type Source struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Binary is the default of its builders' Binary: build R binary
	// packages for the workers' platforms beside the source tarballs.
	Binary    bool      `json:"binary,omitempty"`
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
	BuildVignettes bool `json:"build_vignettes,omitempty"`
	// Check runs the check stage after the build: R CMD check
	// --no-manual --as-cran on an R builder's tarball, CheckCommand on a
	// Python builder's checkout. CheckGates holds back the artifacts of a
	// build whose check says WARNING or ERROR (or could not run); without
	// it the verdict is only recorded.
	Check        bool   `json:"check,omitempty"`
	CheckGates   bool   `json:"check_gates,omitempty"`
	CheckCommand string `json:"check_command,omitempty"` // Python; empty = no Python check
	// Binary has R builds also make a binary package for the worker's
	// platform (R CMD INSTALL --build); nil: the source's Binary.
	Binary    *bool     `json:"binary,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`

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

// BuildsBinary says whether the builder's builds make an R binary
// package: its own Binary, else its source's default.
func (b *Builder) BuildsBinary(src Source) bool {
	if b.Binary != nil {
		return *b.Binary
	}
	return src.Binary
}

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
	// Describe is where a version from git comes from: `git describe
	// --tags --long` of the commit in its checkout, as setuptools-scm and
	// hatch-vcs ask it ("v1.2.3-4-gabcdef0"); empty when no tag is in the
	// commit's history.
	Describe string `json:"describe,omitempty"`
	Sandbox  string `json:"sandbox,omitempty"`
	// SandboxTier is the tier of the sandbox that ran the last attempt
	// ("full", "masked-proc"), or "unsandboxed"; empty before one started.
	SandboxTier string     `json:"sandbox_tier"`
	Worker      string     `json:"worker,omitempty"`
	Artifacts   []Artifact `json:"artifacts"`
	// Fetched lists what the build fetched through its door to a package
	// index (internal/door): its build requirements' provenance.
	Fetched    []Fetched  `json:"fetched,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// AttemptToken is the token of the attempt that last wrote the
	// record (internal/registry's BeginAttempt); 0 before any attempt.
	AttemptToken int64 `json:"attempt_token,omitempty"`
	// WaitingSince is when the build first found no free build slot, while
	// it waits (parked) for one.
	WaitingSince *time.Time `json:"waiting_since,omitempty"`
	// Phases is how long each phase of the build took, in the order
	// queued, waiting, clone, sandbox_start, build, check, checks, store, record
	// (those that happened; PhaseOrder).
	Phases []Phase `json:"phases,omitempty"`
	// Warnings are what the package's metadata does that its own tools
	// accept but warn of (internal/pkgmeta), one line each.
	Warnings []string `json:"warnings,omitempty"`
	// Check is the check stage's verdict, when the builder has one.
	Check *Check `json:"check,omitempty"`
	// Log names the finished build's log once it moved from Redis into
	// the artifact store (internal/buildlog); nil while Redis holds it.
	Log *StoredLog `json:"log,omitempty"`
}

// StoredLog is a finished build's log in the artifact store: the file
// File of attempt Token under <source>/<Package>/, gzip-compressed.
type StoredLog struct {
	// Package is the store's package element: the build's package, or
	// its builder's name when it made none (it failed first).
	Package string `json:"package"`
	Token   int64  `json:"token"`
	File    string `json:"file"`
	Size    int64  `json:"size"`   // bytes of the log
	Stored  int64  `json:"stored"` // bytes of its compressed file
	SHA256  string `json:"sha256"` // of its compressed file
}

// Check verdicts: R CMD check's worst (OK, NOTE, WARNING, ERROR), or
// CheckFailed when the check could not run to its end (a timeout, a
// kill). A Python check command is OK or ERROR by its exit status.
const (
	CheckOK      = "OK"
	CheckNote    = "NOTE"
	CheckWarning = "WARNING"
	CheckError   = "ERROR"
	CheckFailed  = "failed"
)

// Check is the verdict of a build's check stage.
type Check struct {
	Verdict  string `json:"verdict"`
	Notes    int    `json:"notes,omitempty"`
	Warnings int    `json:"warnings,omitempty"`
	Errors   int    `json:"errors,omitempty"`
	// Gated says the verdict held the build back (check_gates): it
	// failed and its artifacts were not published.
	Gated bool `json:"gated,omitempty"`
	// Summary is one line: the counts and the first problem.
	Summary string `json:"summary,omitempty"`
}

// Gates reports whether the verdict holds a build back under
// check_gates: WARNING, ERROR or failed, as CRAN takes a package with
// NOTEs but not with WARNINGs.
func (c *Check) Gates() bool {
	return c != nil && (c.Verdict == CheckWarning || c.Verdict == CheckError || c.Verdict == CheckFailed)
}

// Phase is how long one phase of a build took.
type Phase struct {
	Phase string  `json:"phase"`
	MS    float64 `json:"ms"`
}

// The phases of a build, in the order Build.Phases lists them.
const (
	PhaseQueued       = "queued"        // queued until a worker took it
	PhaseWaiting      = "waiting"       // parked, waiting for a build slot
	PhaseClone        = "clone"         // git clone and checkout
	PhaseSandboxStart = "sandbox_start" // the sandbox until the build tool started
	PhaseBuild        = "build"         // the build tool (R CMD build, python -m build)
	PhaseCheck        = "check"         // the check stage (R CMD check, the check command)
	PhaseChecks       = "checks"        // checks of the build's result
	PhaseStore        = "store"         // copying artifacts into the store
	PhaseRecord       = "record"        // writing the final record and log
)

// PhaseOrder lists the phases in the order of Build.Phases.
var PhaseOrder = []string{PhaseQueued, PhaseWaiting, PhaseClone, PhaseSandboxStart, PhaseBuild, PhaseCheck, PhaseChecks, PhaseStore, PhaseRecord}

// SetPhase records (or replaces) how long phase took, keeping PhaseOrder.
func (b *Build) SetPhase(phase string, d time.Duration) {
	ms := float64(d.Microseconds()) / 1000
	rank := func(p string) int {
		for i, q := range PhaseOrder {
			if q == p {
				return i
			}
		}
		return len(PhaseOrder)
	}
	out := make([]Phase, 0, len(b.Phases)+1)
	added := false
	for _, p := range b.Phases {
		switch {
		case p.Phase == phase:
			continue
		case !added && rank(phase) < rank(p.Phase):
			out = append(out, Phase{Phase: phase, MS: ms})
			added = true
		}
		out = append(out, p)
	}
	if !added {
		out = append(out, Phase{Phase: phase, MS: ms})
	}
	b.Phases = out
}

// Fetched is one distribution a build fetched through its door
// (internal/door), as the build record lists it: a rebuild can pin to
// these.
type Fetched struct {
	Name    string `json:"name"` // PEP 503-normalised for Python ("poetry-core")
	Version string `json:"version"`
	File    string `json:"file"`
	SHA256  string `json:"sha256"`
	// Environments are the build environments that asked for the file,
	// in the order the build made them: "sdist", "wheel" or both for
	// python -m build; none for R.
	Environments []string `json:"environments,omitempty"`
}

// Artifact is one file a build produced.
type Artifact struct {
	File   string `json:"file"`
	Kind   string `json:"kind"` // "source" (R tarball), "binary" (R), "sdist", "wheel"
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Platform and RVersion are what an R binary was built for: the
	// worker's os-release ID-VERSION_ID ("debian-12") and R's x.y ("4.2").
	// A linux_<arch> wheel has the Platform too. The index never serves
	// either to another.
	Platform string `json:"platform,omitempty"`
	RVersion string `json:"r_version,omitempty"`
	// Tags are a wheel's compatibility tags (PEP 425), from its file name:
	// "cp311-cp311-linux_x86_64", "py3-none-any".
	Tags []string `json:"tags,omitempty"`
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

// DisplayURL is a repository URL as a person reads it (the page and the
// CLI show it so): a file:// URL with its path
// decoded (file:///my work/repo for file:///my%20work/repo); others as
// they are.
func DisplayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "file" || u.RawQuery != "" || u.Fragment != "" {
		return raw
	}
	return "file://" + u.Host + u.Path
}
