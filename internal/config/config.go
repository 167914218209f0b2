// Package config loads pkgfleet's settings: a gcfg file (the format PPM
// uses), then PKGFLEET_<SECTION>_<KEY> environment overrides, then derived
// defaults, then validation.
//
// Every setting is declared exactly once, in the settings table of
// settings.go, with its name, default and doc string; the loader, the
// README's table and each binary's --help are generated from it.
//
// It does not watch files or reload: a running process keeps the settings
// it started with.
package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/go-git/gcfg/v2"
	"github.com/pkgfleet/pkgfleet/internal/door"
	"github.com/pkgfleet/pkgfleet/internal/lease"
	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
)

// Config is the whole of pkgfleet's settings.
type Config struct {
	Server      Server
	Git         Git
	Worker      Worker
	Redis       Redis
	HTTP        HTTP
	FileStorage FileStorage
	Storage     Storage
	S3Storage   S3Storage
	Reconcile   Reconcile
	Retention   Retention

	// File is the config file the settings were read from ("" if none).
	File string
}

// Server holds the [Server] section.
type Server struct {
	DataDir       string
	TempDir       string
	SockFileDir   string
	RVersion      string
	PythonVersion string
	RunAsUser     string
}

// Git holds the [Git] section.
type Git struct {
	BuildConcurrency          int
	AllowUnsandboxedGitBuilds bool
	AllowFileURLs             bool
	BuilderDir                string
	CredentialKeyFile         string
	SSHKnownHostsFile         string
	PollInterval              time.Duration
	BuildRetries              int
	BuildTimeout              time.Duration
	BuildNetwork              bool
	PythonIndexURL            string
	RRepositoryURL            string
	BuildMemory               Size
	BuildProcesses            int
	BuildDiskSize             Size
	BuildLogSize              Size
	MaxSlotWait               time.Duration
	PollConcurrency           int
	ListRemotesWithGit        bool
	MaxBuildersPerSource      int
	PollTimeout               time.Duration
	AllowedHosts              []string
	RemoteTimeout             time.Duration
	RemoteConcurrency         int
	MaxCloneSize              Size
}

// Worker holds the [Worker] section.
type Worker struct {
	Concurrency       int
	ShutdownGrace     time.Duration
	MetricsListen     string
	ReprobeInterval   time.Duration
	FenceAfter        time.Duration
	TaskCheckInterval time.Duration
	ObjectCacheSize   Size
}

// Redis holds the [Redis] section.
type Redis struct {
	Address  string
	URL      string
	Password string
	DB       int
	// Sentinel: when SentinelAddresses is set, every client asks the
	// sentinels for SentinelMaster's address and follows it across
	// failovers (internal/redisconn).
	SentinelAddresses string
	SentinelMaster    string
	SentinelPassword  string
	// The durability step after the writes that must survive a failover
	// (internal/redisconn.Durability).
	WaitReplicas int
	WaitTimeout  time.Duration
}

// Sentinels lists Redis.SentinelAddresses; none without Sentinel.
func (r Redis) Sentinels() []string {
	var out []string
	for _, a := range strings.Split(r.SentinelAddresses, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Reconcile holds the [Reconcile] section: the reconciler's
// (internal/reconcile).
type Reconcile struct {
	Interval time.Duration
	Grace    time.Duration
}

// Retention holds the [Retention] section: which finished builds Redis
// keeps (internal/retention).
type Retention struct {
	KeepBuilds int
	KeepFor    time.Duration
	Interval   time.Duration
}

// HTTP holds the [HTTP] section.
type HTTP struct {
	Listen         string
	TokensFile     string
	PublicIndexes  bool
	MaxBodySize    Size
	SessionTimeout time.Duration

	WebhookMaxBodySize  Size
	WebhookReplayWindow time.Duration
	WriteRate           int
	WriteBurst          int
	PublicURL           string
}

// FileStorage holds the [FileStorage] section.
type FileStorage struct {
	Location string
}

// Storage holds the [Storage] section: where artifacts are kept.
type Storage struct {
	Default     string // "file" or "s3"
	S3Redirect  bool
	OrphanGrace time.Duration
}

// S3Storage holds the [S3Storage] section (PPM's names). Credentials are
// the AWS SDK's default chain's, never a setting.
type S3Storage struct {
	Bucket          string
	Region          string
	Prefix          string
	Endpoint        string
	EnablePathStyle bool
}

// Source tells Load where settings come from. The zero value reads no file
// and the process environment.
type Source struct {
	File   string              // gcfg file; "" for none
	Getenv func(string) string // nil means os.Getenv
}

// Load reads, overrides, derives and validates the settings.
func Load(src Source) (*Config, error) {
	c := Defaults()
	if src.File != "" {
		c.File = src.File
		data, err := os.ReadFile(src.File)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := c.readGcfg(src.File, data); err != nil {
			return nil, err
		}
	}
	getenv := src.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	for _, s := range settings {
		name := s.EnvName()
		if v := getenv(name); v != "" {
			if err := s.set(c, v); err != nil {
				return nil, fmt.Errorf("config: environment %s: %w", name, err)
			}
		}
	}
	if err := c.derive(getenv); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Defaults returns the settings before any file or environment is read;
// derived settings (BuilderDir, TempDir, …) are still empty.
func Defaults() *Config {
	c := &Config{}
	for _, s := range settings {
		if s.Default == "" {
			continue
		}
		if err := s.set(c, s.Default); err != nil {
			panic(fmt.Sprintf("config: default of %s: %v", s.Name(), err)) // a bug in settings.go
		}
	}
	return c
}

// readGcfg parses data with the gcfg reader and applies each variable
// through the settings table, so that unknown keys and bad values are
// reported with the file, the line and the key.
func (c *Config) readGcfg(file string, data []byte) error {
	lines := variableLines(data)
	n := 0
	err := gcfg.ReadWithCallback(bytes.NewReader(data), func(section, subsection, key, value string, blank bool) error {
		if key == "" {
			if subsection != "" {
				return fmt.Errorf("config: %s: section [%s %q]: subsections are not supported", file, section, subsection)
			}
			if lookupSection(section) == "" {
				return fmt.Errorf("config: %s: unknown section [%s]", file, section)
			}
			return nil
		}
		line := 0
		if n < len(lines) {
			line = lines[n]
		}
		n++
		where := fmt.Sprintf("%s:%d", file, line)
		s := lookup(section, key)
		if s == nil {
			return fmt.Errorf("config: %s: unknown setting %s.%s", where, section, key)
		}
		if blank {
			if s.kind != kindBool {
				return fmt.Errorf("config: %s: %s needs a value", where, s.Name())
			}
			value = "true"
		}
		if s.kind == kindList {
			// A repeated key adds to the list (gcfg's multi-valued variable).
			p := s.field(c).(*[]string)
			*p = append(*p, splitList(value)...)
			return nil
		}
		if err := s.set(c, value); err != nil {
			return fmt.Errorf("config: %s: %s: %w", where, s.Name(), err)
		}
		return nil
	})
	if err != nil {
		if strings.HasPrefix(err.Error(), "config: ") {
			return err
		}
		return fmt.Errorf("config: %s: %w", file, err)
	}
	return nil
}

var variableLine = regexp.MustCompile(`^\s*[A-Za-z][A-Za-z0-9-]*\s*($|=|;|#)`)

// variableLines lists, in order, the line numbers of the lines that define
// a variable. gcfg reports variables in file order but without positions,
// so the n-th callback belongs to the n-th such line.
func variableLines(data []byte) []int {
	var out []int
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	no, continued := 0, false
	for sc.Scan() {
		no++
		text := sc.Text()
		wasContinued := continued
		continued = strings.HasSuffix(strings.TrimRight(text, " \t\r"), `\`)
		if wasContinued {
			continue
		}
		if variableLine.MatchString(text) {
			out = append(out, no)
		}
	}
	return out
}

// derive fills the settings whose defaults depend on others.
func (c *Config) derive(getenv func(string) string) error {
	if c.Server.TempDir == "" {
		c.Server.TempDir = getenv("TMPDIR")
		if c.Server.TempDir == "" {
			c.Server.TempDir = "/tmp"
		}
	}
	if c.Git.BuilderDir == "" {
		c.Git.BuilderDir = filepath.Join(c.Server.DataDir, "builder")
	}
	if c.FileStorage.Location == "" {
		c.FileStorage.Location = filepath.Join(c.Server.DataDir, "packages")
	}
	if c.Worker.Concurrency == 0 {
		c.Worker.Concurrency = runtime.NumCPU()
	}
	return nil
}

// Validate checks values that each parse fine alone but are wrong for
// pkgfleet.
func (c *Config) Validate() error {
	var errs []error
	abs := func(name, p string) {
		if p != "" && !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s must be an absolute path, got %q", name, p))
		}
	}
	abs("Server.DataDir", c.Server.DataDir)
	abs("Server.TempDir", c.Server.TempDir)
	abs("Server.SockFileDir", c.Server.SockFileDir)
	abs("Git.BuilderDir", c.Git.BuilderDir)
	abs("FileStorage.Location", c.FileStorage.Location)
	if c.Server.DataDir == "" {
		errs = append(errs, errors.New("Server.DataDir must be set"))
	}
	switch c.Storage.Default {
	case "file":
	case "s3":
		if c.S3Storage.Bucket == "" {
			errs = append(errs, errors.New("S3Storage.Bucket must be set when Storage.Default = s3"))
		}
	default:
		errs = append(errs, fmt.Errorf("Storage.Default must be file or s3, got %q", c.Storage.Default))
	}
	if c.Git.BuildConcurrency < 1 {
		errs = append(errs, fmt.Errorf("Git.BuildConcurrency must be at least 1, got %d", c.Git.BuildConcurrency))
	}
	if c.Git.BuildRetries < 1 {
		errs = append(errs, fmt.Errorf("Git.BuildRetries must be at least 1 (the first attempt counts), got %d", c.Git.BuildRetries))
	}
	if c.Git.BuildTimeout <= 0 {
		errs = append(errs, fmt.Errorf("Git.BuildTimeout must be positive, got %s", c.Git.BuildTimeout))
	}
	if c.Git.PollInterval < time.Second {
		errs = append(errs, fmt.Errorf("Git.PollInterval must be at least 1s, got %s", c.Git.PollInterval))
	}
	if c.Git.PollConcurrency < 1 {
		errs = append(errs, fmt.Errorf("Git.PollConcurrency must be at least 1, got %d", c.Git.PollConcurrency))
	}
	if c.HTTP.SessionTimeout < time.Minute {
		errs = append(errs, fmt.Errorf("HTTP.SessionTimeout must be at least 1m, got %s", c.HTTP.SessionTimeout))
	}
	if u := c.HTTP.PublicURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.User != nil || pu.RawQuery != "" {
			errs = append(errs, fmt.Errorf("HTTP.PublicURL must be an http:// or https:// URL without user or query, got %q", u))
		}
	}
	if c.Git.PollTimeout < time.Second {
		errs = append(errs, fmt.Errorf("Git.PollTimeout must be at least 1s, got %s", c.Git.PollTimeout))
	}
	if c.Git.RemoteTimeout < time.Second {
		errs = append(errs, fmt.Errorf("Git.RemoteTimeout must be at least 1s, got %s", c.Git.RemoteTimeout))
	}
	if c.Git.RemoteConcurrency < 1 {
		errs = append(errs, fmt.Errorf("Git.RemoteConcurrency must be at least 1, got %d", c.Git.RemoteConcurrency))
	}
	if _, err := netpolicy.New(c.Git.AllowedHosts); err != nil {
		errs = append(errs, err)
	}
	for _, ix := range []struct{ name, url string }{{"Git.PythonIndexURL", c.Git.PythonIndexURL}, {"Git.RRepositoryURL", c.Git.RRepositoryURL}} {
		if ix.url != "" {
			if err := door.CheckURL(ix.url); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", ix.name, err))
			}
		}
	}
	if c.Worker.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("Worker.Concurrency must be at least 1, got %d", c.Worker.Concurrency))
	}
	if c.Worker.TaskCheckInterval < time.Millisecond || c.Worker.TaskCheckInterval > time.Minute {
		errs = append(errs, fmt.Errorf("Worker.TaskCheckInterval must be between 1ms and 1m, got %s", c.Worker.TaskCheckInterval))
	}
	// The build must be gone before its slot can lapse to another attempt.
	if err := lease.CheckFence(c.Worker.FenceAfter, lease.Slot); err != nil {
		errs = append(errs, err)
	}
	// An attempt that can no longer confirm its hold stops within
	// FenceAfter, and its worker's asynq keeps trying to move its task
	// until its own lease of it runs out: until then what it holds is
	// work in flight, which a repair could race.
	if least := c.Worker.FenceAfter + lease.Task; c.Reconcile.Grace <= least {
		errs = append(errs, fmt.Errorf("Reconcile.Grace must exceed Worker.FenceAfter + asynq's task lease (%s + %s = %s): a worker whose build lost its task or slot is still stopping it until then, got %s", c.Worker.FenceAfter, lease.Task, least, c.Reconcile.Grace))
	}
	if c.Retention.KeepBuilds < 1 {
		errs = append(errs, fmt.Errorf("Retention.KeepBuilds must be at least 1 (a git-builder's last build is always kept), got %d", c.Retention.KeepBuilds))
	}
	if c.Retention.KeepFor < 0 {
		errs = append(errs, fmt.Errorf("Retention.KeepFor must not be negative, got %s", c.Retention.KeepFor))
	}
	if c.Retention.Interval < time.Second {
		errs = append(errs, fmt.Errorf("Retention.Interval must be at least 1s, got %s", c.Retention.Interval))
	}
	if c.Reconcile.Interval < time.Second {
		errs = append(errs, fmt.Errorf("Reconcile.Interval must be at least 1s, got %s", c.Reconcile.Interval))
	}
	if c.Redis.Address == "" && c.Redis.URL == "" && len(c.Redis.Sentinels()) == 0 {
		errs = append(errs, errors.New("Redis.Address, Redis.URL or Redis.SentinelAddresses must be set"))
	}
	if len(c.Redis.Sentinels()) > 0 {
		if c.Redis.SentinelMaster == "" {
			errs = append(errs, errors.New("Redis.SentinelMaster must name the master the sentinels watch"))
		}
		// The writes that must survive a failover wait for replicas
		// (docs/fleet.md, "Redis failover"), within a fence period.
		if err := lease.CheckDurability(c.Worker.FenceAfter, lease.Slot, c.Redis.WaitReplicas, c.Redis.WaitTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		where := "config"
		if c.File != "" {
			where = "config: " + c.File
		}
		return fmt.Errorf("%s: %w", where, errors.Join(errs...))
	}
	return nil
}

// Outbound is the outbound network policy of git remotes and package
// indexes (Git.AllowedHosts).
func (c *Config) Outbound() (*netpolicy.Policy, error) {
	p, err := netpolicy.New(c.Git.AllowedHosts)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return p, nil
}

// Dir is the directory of the config file, masked in the sandbox ("" when
// no file was read).
func (c *Config) Dir() string {
	if c.File == "" {
		return ""
	}
	abs, err := filepath.Abs(c.File)
	if err != nil {
		return filepath.Dir(c.File)
	}
	return filepath.Dir(abs)
}
