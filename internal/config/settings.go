package config

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/lease"
)

type kind int

const (
	kindString kind = iota
	kindInt
	kindBool
	kindDuration
	kindSize
	kindList
)

// Setting is one declared setting: its place in the file, its default, its
// doc string and how to store a value.
type Setting struct {
	Section string
	Key     string
	Default string // as written in a file; "" = unset or derived (see Doc)
	Doc     string
	Secret  bool // never printed back
	kind    kind
	field   func(*Config) any // pointer to the field
}

// Name is the setting's name as PPM writes it, e.g. "Git.BuildConcurrency".
func (s *Setting) Name() string { return s.Section + "." + s.Key }

// EnvName is the environment variable that overrides the setting.
func (s *Setting) EnvName() string {
	return "PKGFLEET_" + strings.ToUpper(s.Section) + "_" + strings.ToUpper(s.Key)
}

func (s *Setting) set(c *Config, v string) error {
	v = strings.TrimSpace(v)
	switch p := s.field(c).(type) {
	case *string:
		*p = v
	case *int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		if n < 0 {
			return fmt.Errorf("%q must not be negative", v)
		}
		*p = n
	case *bool:
		b, err := parseBool(v)
		if err != nil {
			return err
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (like 90s, 5m or 1h30m)", v)
		}
		if d < 0 {
			return fmt.Errorf("%q must not be negative", v)
		}
		*p = d
	case *Size:
		sz, err := ParseSize(v)
		if err != nil {
			return err
		}
		*p = sz
	case *[]string:
		*p = splitList(v)
	default:
		return fmt.Errorf("unsupported setting type %T", p)
	}
	return nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (true or false)", v)
}

func str(sec, key, def, doc string, f func(*Config) *string) *Setting {
	return &Setting{Section: sec, Key: key, Default: def, Doc: doc, kind: kindString, field: func(c *Config) any { return f(c) }}
}

func integer(sec, key, def, doc string, f func(*Config) *int) *Setting {
	return &Setting{Section: sec, Key: key, Default: def, Doc: doc, kind: kindInt, field: func(c *Config) any { return f(c) }}
}

func boolean(sec, key, def, doc string, f func(*Config) *bool) *Setting {
	return &Setting{Section: sec, Key: key, Default: def, Doc: doc, kind: kindBool, field: func(c *Config) any { return f(c) }}
}

func duration(sec, key, def, doc string, f func(*Config) *time.Duration) *Setting {
	return &Setting{Section: sec, Key: key, Default: def, Doc: doc, kind: kindDuration, field: func(c *Config) any { return f(c) }}
}

// list is a setting of several values: comma-separated, or (in a file)
// the key repeated, as gcfg's multi-valued variables are.
func list(sec, key, def, doc string, f func(*Config) *[]string) *Setting {
	return &Setting{Section: sec, Key: key, Default: def, Doc: doc, kind: kindList, field: func(c *Config) any { return f(c) }}
}

// splitList reads a list value: items separated by commas or white space.
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

func size(sec, key, def, doc string, f func(*Config) *Size) *Setting {
	return &Setting{Section: sec, Key: key, Default: def, Doc: doc, kind: kindSize, field: func(c *Config) any { return f(c) }}
}

// settings is the one place each setting is declared.
var settings = []*Setting{
	str("Server", "DataDir", "/var/lib/pkgfleet", "All variable data; masked in the sandbox.", func(c *Config) *string { return &c.Server.DataDir }),
	str("Server", "TempDir", "", "Parent of pkgfleet-workspaces/, one private TMPDIR per build process (default: $TMPDIR, else /tmp).", func(c *Config) *string { return &c.Server.TempDir }),
	str("Server", "SockFileDir", "/var/run/pkgfleet", "Sockets; masked in the sandbox.", func(c *Config) *string { return &c.Server.SockFileDir }),
	str("Server", "RVersion", "", "R installation directory (e.g. /opt/R/4.4.1); unset scans /opt/R/*, /opt/local/R/*, /usr/lib/R … then PATH, newest wins.", func(c *Config) *string { return &c.Server.RVersion }),
	str("Server", "PythonVersion", "", "Python interpreter path; unset scans /opt/python/*/bin then PATH for a python with the build module.", func(c *Config) *string { return &c.Server.PythonVersion }),
	str("Server", "RunAsUser", "", "Who build processes run as (default: the invoking user; when that is root, an unprivileged user).", func(c *Config) *string { return &c.Server.RunAsUser }),

	integer("Git", "BuildConcurrency", "25", "Concurrent builds per tag-triggered builder across the fleet (commit builders build one at a time).", func(c *Config) *int { return &c.Git.BuildConcurrency }),
	boolean("Git", "AllowUnsandboxedGitBuilds", "false", "Run builds without the sandbox (insecure; loudly logged).", func(c *Config) *bool { return &c.Git.AllowUnsandboxedGitBuilds }),
	boolean("Git", "AllowFileURLs", "false", "Accept file:// repository URLs (for tests and local demos).", func(c *Config) *bool { return &c.Git.AllowFileURLs }),
	str("Git", "BuilderDir", "", "Clone and work area (default: DataDir/builder); masked in the sandbox.", func(c *Config) *string { return &c.Git.BuilderDir }),
	str("Git", "CredentialKeyFile", "", "Secret file (at least 32 random bytes) whose key encrypts git credentials at rest; API and workers need the same file.", func(c *Config) *string { return &c.Git.CredentialKeyFile }),
	str("Git", "SSHKnownHostsFile", "", "known_hosts file of the ssh servers that ssh git credentials without known_hosts of their own may be sent to (StrictHostKeyChecking=yes); unset, each ssh credential must carry its own. API and workers read it.", func(c *Config) *string { return &c.Git.SSHKnownHostsFile }),
	duration("Git", "PollInterval", "5m", "Default time between polls of a git-builder's remote.", func(c *Config) *time.Duration { return &c.Git.PollInterval }),
	integer("Git", "BuildRetries", "3", "Attempts per build before it is marked failed.", func(c *Config) *int { return &c.Git.BuildRetries }),
	duration("Git", "BuildTimeout", "1h", "Wall-clock limit of one build attempt.", func(c *Config) *time.Duration { return &c.Git.BuildTimeout }),
	boolean("Git", "BuildNetwork", "false", "false: builds get an empty network namespace (with one door to Git.PythonIndexURL / Git.RRepositoryURL when set) and Python builds without a door run --no-isolation; true: the host's whole network, isolated PEP 517 builds (prefer the door).", func(c *Config) *bool { return &c.Git.BuildNetwork }),
	secret(str("Git", "PythonIndexURL", "", "PEP 503 index (PyPI mirror, PPM, pkgfleet's own /pypi/SOURCE/simple/) that Python builds get their build requirements from through the door, the one address their empty network has; set, builds run isolated. May carry user:password, which only the door sees. Unset: offline.", func(c *Config) *string { return &c.Git.PythonIndexURL })),
	secret(str("Git", "RRepositoryURL", "", "CRAN-like repository (a CRAN mirror, PPM, pkgfleet's own /cran/SOURCE) that R builds with build_vignettes install vignette dependencies from through the door. May carry user:password, which only the door sees. Unset: offline.", func(c *Config) *string { return &c.Git.RRepositoryURL })),
	size("Git", "BuildMemory", "4GiB", "Memory limit of one build.", func(c *Config) *Size { return &c.Git.BuildMemory }),
	integer("Git", "BuildProcesses", "1024", "Process limit of one build.", func(c *Config) *int { return &c.Git.BuildProcesses }),
	size("Git", "BuildDiskSize", "8GiB", "Limit on what one build writes to its TMPDIR and destination.", func(c *Config) *Size { return &c.Git.BuildDiskSize }),
	size("Git", "BuildLogSize", "4MiB", "Build log kept per build; the rest is cut with a visible mark.", func(c *Config) *Size { return &c.Git.BuildLogSize }),
	duration("Git", "MaxSlotWait", "24h", "How long a build may wait for a free build slot of its builder (BuildConcurrency) before that attempt fails.", func(c *Config) *time.Duration { return &c.Git.MaxSlotWait }),
	integer("Git", "MaxBuildersPerSource", "1000", "Git-builders one source may have; creating one more is 409 (each is polled on its own interval). 0: no limit.", func(c *Config) *int { return &c.Git.MaxBuildersPerSource }),
	integer("Git", "PollConcurrency", "8", "Remotes the poller queries at once.", func(c *Config) *int { return &c.Git.PollConcurrency }),
	boolean("Git", "ListRemotesWithGit", "false", "List remotes (each poll, a run's branch head) with git ls-remote, two processes each, instead of reading an https remote's ref advertisement and a local repository's ref files without a process; for a git configuration a listing must honour (url.insteadOf, http.sslCAInfo, a client certificate).", func(c *Config) *bool { return &c.Git.ListRemotesWithGit }),
	duration("Git", "PollTimeout", "1m", "Time limit of one poll (ls-remote) of a remote.", func(c *Config) *time.Duration { return &c.Git.PollTimeout }),
	list("Git", "AllowedHosts", "", "Hosts (git.corp.example), domains (*.corp.example), addresses and CIDRs (10.1.0.0/16) that git remotes and package indexes may reach although they are loopback, link-local, private, CGNAT or cloud metadata addresses, all refused by default (checked on the address connected to, after DNS and redirects); comma-separated, or the key repeated.", func(c *Config) *[]string { return &c.Git.AllowedHosts }),
	duration("Git", "RemoteTimeout", "20s", "Time limit of a query of a remote that an API request waits for (ls-remote for a run or rerun; ls-remote and shallow clone for an R builder created without a name).", func(c *Config) *time.Duration { return &c.Git.RemoteTimeout }),
	integer("Git", "RemoteConcurrency", "4", "Remote queries API requests make at once per API process; more wait up to Git.RemoteTimeout for a free one, then get 503.", func(c *Config) *int { return &c.Git.RemoteConcurrency }),
	size("Git", "MaxCloneSize", "2GiB", "Most a clone (with its submodules) receives from its remotes (https, ssh, git://); a larger one fails its build.", func(c *Config) *Size { return &c.Git.MaxCloneSize }),

	integer("Worker", "Concurrency", "", "Build slots of one worker process (default: number of CPUs).", func(c *Config) *int { return &c.Worker.Concurrency }),
	str("Worker", "MetricsListen", "", "Address of the worker's /metrics, /healthz and /readyz (e.g. :9464); empty: not served.", func(c *Config) *string { return &c.Worker.MetricsListen }),
	duration("Worker", "ShutdownGrace", "30s", "On SIGTERM, how long running builds may finish before they are requeued.", func(c *Config) *time.Duration { return &c.Worker.ShutdownGrace }),
	duration("Worker", "TaskCheckInterval", "20ms", "How often an idle worker asks Redis for a build (asynq polls): sets how soon a push on an idle fleet starts, and costs each idle worker about 50 Redis commands a second per queue at 20ms (20 at 50ms); a large fleet may trade latency for less idle load.", func(c *Config) *time.Duration { return &c.Worker.TaskCheckInterval }),
	duration("Worker", "FenceAfter", lease.DefaultFence.String(), fmt.Sprintf("A running build whose worker could not confirm its hold (Redis unreachable, the slot or task lease gone) for this long is stopped, before its build slot's %gs lease can pass to another attempt; must be between %gs and %gs.", lease.Slot.Seconds(), lease.MinFence.Seconds(), lease.MaxFence(lease.Slot).Seconds()), func(c *Config) *time.Duration { return &c.Worker.FenceAfter }),
	size("Worker", "ObjectCacheSize", "4GiB", "Most the worker's cache of its remotes' git objects (below Git.BuilderDir, one bare repository per remote and credential, fetched incrementally, outside every sandbox) may hold; the least recently used remotes go first. A build of an R package checks out from it. 0: no cache, every clone fetches from its remote.", func(c *Config) *Size { return &c.Worker.ObjectCacheSize }),
	duration("Worker", "ReprobeInterval", "30s", "First wait before a language or a sandbox whose probe failed is probed again; it doubles up to 5m (0: never re-probe).", func(c *Config) *time.Duration { return &c.Worker.ReprobeInterval }),

	str("Redis", "Address", "localhost:6379", "Redis host:port, or a unix socket path.", func(c *Config) *string { return &c.Redis.Address }),
	str("Redis", "URL", "", "Redis URL (redis://, rediss://, unix://); overrides Address.", func(c *Config) *string { return &c.Redis.URL }),
	secret(str("Redis", "Password", "", "Redis password.", func(c *Config) *string { return &c.Redis.Password })),
	integer("Redis", "DB", "0", "Redis database number.", func(c *Config) *int { return &c.Redis.DB }),
	str("Redis", "SentinelAddresses", "", "Comma-separated host:port of Redis Sentinels. When set, every connection asks them for the master named Redis.SentinelMaster and follows it across failovers (Redis.Address is then unused; Redis.URL may still give rediss:// for TLS, the password and the DB).", func(c *Config) *string { return &c.Redis.SentinelAddresses }),
	str("Redis", "SentinelMaster", "pkgfleet", "The master name the sentinels monitor (used with Redis.SentinelAddresses).", func(c *Config) *string { return &c.Redis.SentinelMaster }),
	secret(str("Redis", "SentinelPassword", "", "The sentinels' own password (requirepass of redis-sentinel); Redis.Password stays the data nodes'.", func(c *Config) *string { return &c.Redis.SentinelPassword })),
	integer("Redis", "WaitReplicas", "1", "With Sentinel: how many replicas must hold a write that must survive a failover (a build's acknowledgement, an attempt's begin, a fence confirmation, a succeeded record) before it counts (WAIT); at least 1. Unused without Sentinel.", func(c *Config) *int { return &c.Redis.WaitReplicas }),
	duration("Redis", "WaitTimeout", "1s", "With Sentinel: how long such a write waits for Redis.WaitReplicas replicas before it is refused as not durable (the API answers 503, a worker retries or stops its build); below Worker.FenceAfter/4.", func(c *Config) *time.Duration { return &c.Redis.WaitTimeout }),

	duration("Reconcile", "Interval", "1m", "Time between the reconciler's passes (one API replica, the leader, runs them): it repairs builds whose task Redis lost, active tasks with no lease, build slots held by superseded attempts and tasks whose build is gone.", func(c *Config) *time.Duration { return &c.Reconcile.Interval }),
	duration("Reconcile", "Grace", "2m", "How long the reconciler must see an inconsistency unchanged before it repairs it, so that work in flight (a task being queued, a task between dequeue and its attempt) is never taken for a loss; must exceed Worker.FenceAfter + 30s (asynq's task lease).", func(c *Config) *time.Duration { return &c.Reconcile.Grace }),

	integer("Retention", "KeepBuilds", "100", "Redis keeps the last this many builds of each git-builder; older finished builds go (record, stored log, artifacts no index serves) unless the index serves their artifacts or they are newer than Retention.KeepFor.", func(c *Config) *int { return &c.Retention.KeepBuilds }),
	duration("Retention", "KeepFor", "720h", "Every build that finished within this long is kept, whatever Retention.KeepBuilds says; 0: only the last Retention.KeepBuilds and the served ones.", func(c *Config) *time.Duration { return &c.Retention.KeepFor }),
	duration("Retention", "Interval", "10m", "Time between retention passes (one API replica, the leader, runs them, in batches): each moves finished builds' logs still in Redis into the artifact store and drops the builds the policy no longer keeps.", func(c *Config) *time.Duration { return &c.Retention.Interval }),

	str("HTTP", "Listen", "127.0.0.1:4242", "API listen address; without TokensFile only loopback is allowed.", func(c *Config) *string { return &c.HTTP.Listen }),
	str("HTTP", "TokensFile", "", "File of API tokens with scopes read, write, admin.", func(c *Config) *string { return &c.HTTP.TokensFile }),
	boolean("HTTP", "PublicIndexes", "true", "Serve the CRAN-like and PyPI-like package indexes without a token (false: they need a read token).", func(c *Config) *bool { return &c.HTTP.PublicIndexes }),
	size("HTTP", "MaxBodySize", "1MiB", "Largest request body accepted.", func(c *Config) *Size { return &c.HTTP.MaxBodySize }),
	duration("HTTP", "SessionTimeout", "12h", "How long a sign-in to the builds page and the queue dashboard lasts (from sign-in, not from the last request); signing out, or removing the token from TokensFile, ends it sooner.", func(c *Config) *time.Duration { return &c.HTTP.SessionTimeout }),
	size("HTTP", "WebhookMaxBodySize", "4MiB", "Largest webhook body accepted; webhook bodies are streamed through the signature check and never held, and GitHub's push payloads of many commits outgrow MaxBodySize (a webhook refused as too large leaves the push to the next poll).", func(c *Config) *Size { return &c.HTTP.WebhookMaxBodySize }),
	integer("HTTP", "WriteRate", "120", "Writes (POST, PUT, PATCH, DELETE on /api/v1 and the page's forms) a minute that one API token may make, or one client address without tokens, after WriteBurst; counted in Redis, so across API replicas; over it is 429 with Retry-After. 0: no limit.", func(c *Config) *int { return &c.HTTP.WriteRate }),
	integer("HTTP", "WriteBurst", "60", "Writes one API token may make at once before WriteRate applies.", func(c *Config) *int { return &c.HTTP.WriteBurst }),
	str("HTTP", "PublicURL", "", "The API's address as its users reach it (https://pkgfleet.example.com), the base of the links in outbound webhooks' payloads; empty: payloads carry no links.", func(c *Config) *string { return &c.HTTP.PublicURL }),
	duration("HTTP", "WebhookReplayWindow", "24h", "How long a webhook's delivery id (X-GitHub-Delivery, Idempotency-Key, …) is remembered; the same id again within it is refused with 409.", func(c *Config) *time.Duration { return &c.HTTP.WebhookReplayWindow }),

	str("FileStorage", "Location", "", "Artifacts (default: DataDir/packages); masked in the sandbox.", func(c *Config) *string { return &c.FileStorage.Location }),

	str("Storage", "Default", "file", "Where artifacts are kept: file (FileStorage.Location, shared by the API and every worker) or s3 (the S3Storage bucket; no shared volume).", func(c *Config) *string { return &c.Storage.Default }),
	boolean("Storage", "S3Redirect", "false", "With s3, answer artifact and index file downloads with a redirect to a presigned URL instead of streaming them through the API (clients must reach the bucket).", func(c *Config) *bool { return &c.Storage.S3Redirect }),
	duration("Storage", "OrphanGrace", "1h", "Stored artifacts that no build record names (a worker died after its upload) are deleted by a sweep once older than this; longer than any build's upload-to-record time.", func(c *Config) *time.Duration { return &c.Storage.OrphanGrace }),

	str("S3Storage", "Bucket", "", "Bucket of the artifacts when Storage.Default = s3. Credentials come from the AWS default chain (environment, shared files, web identity, instance role), never from this file.", func(c *Config) *string { return &c.S3Storage.Bucket }),
	str("S3Storage", "Region", "", "The bucket's region (default: the AWS chain's, else us-east-1).", func(c *Config) *string { return &c.S3Storage.Region }),
	str("S3Storage", "Prefix", "", "Key prefix of every artifact in the bucket (e.g. pkgfleet/).", func(c *Config) *string { return &c.S3Storage.Prefix }),
	str("S3Storage", "Endpoint", "", "S3 endpoint URL of an S3-compatible server (Ceph RGW, GCS, versitygw, …); empty: AWS.", func(c *Config) *string { return &c.S3Storage.Endpoint }),
	boolean("S3Storage", "EnablePathStyle", "false", "Address the bucket in the path (endpoint/bucket/key), as most S3-compatible servers need, instead of a virtual host.", func(c *Config) *bool { return &c.S3Storage.EnablePathStyle }),
}

func secret(s *Setting) *Setting { s.Secret = true; return s }

func lookup(section, key string) *Setting {
	for _, s := range settings {
		if strings.EqualFold(s.Section, section) && strings.EqualFold(s.Key, key) {
			return s
		}
	}
	return nil
}

func lookupSection(section string) string {
	for _, s := range settings {
		if strings.EqualFold(s.Section, section) {
			return s.Section
		}
	}
	return ""
}

// Settings returns the declared settings, in table order.
func Settings() []Setting {
	out := make([]Setting, len(settings))
	for i, s := range settings {
		out[i] = *s
	}
	return out
}

// WriteHelp prints the settings table for --help.
func WriteHelp(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SETTING\tDEFAULT\tENVIRONMENT\tMEANING")
	for _, s := range settings {
		def := s.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name(), def, s.EnvName(), s.Doc)
	}
	tw.Flush()
}

// writeMarkdown prints the settings as a Markdown table (for the README).
func writeMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| setting | default | environment | meaning |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, s := range settings {
		def := s.Default
		if def == "" {
			def = "—"
		}
		fmt.Fprintf(w, "| %s | %s | `%s` | %s |\n", s.Name(), def, s.EnvName(), s.Doc)
	}
}

// Size is a number of bytes, written like 512MiB, 2GiB, 100MB or 1048576.
type Size int64

var units = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
}

// ParseSize parses a size with an optional unit.
func ParseSize(v string) (Size, error) {
	v = strings.TrimSpace(v)
	num, mult := v, int64(1)
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(v), strings.ToUpper(u.suffix)) {
			num, mult = strings.TrimSpace(v[:len(v)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || (n > 0 && mult > (1<<62)/n) {
		return 0, fmt.Errorf("%q is not a size (like 512MiB, 2GiB or a number of bytes)", v)
	}
	return Size(n * mult), nil
}

// String writes the size in the largest binary unit that divides it.
func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && int64(s)%u.mult == 0 {
			return fmt.Sprintf("%d%s", int64(s)/u.mult, u.suffix)
		}
	}
	return fmt.Sprintf("%dB", int64(s))
}
