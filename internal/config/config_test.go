package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pkgfleet.gcfg")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) string { return "" }

func TestDefaultsFollowTheDesign(t *testing.T) {
	t.Parallel()
	c, err := Load(Source{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if c.Git.BuildConcurrency != 25 || c.Git.BuildRetries != 3 || c.Git.BuildTimeout != time.Hour ||
		c.Git.PollInterval != 5*time.Minute || c.Git.AllowUnsandboxedGitBuilds || c.Git.AllowFileURLs {
		t.Fatalf("git defaults = %+v", c.Git)
	}
	if c.Server.DataDir != "/var/lib/pkgfleet" || c.Git.BuilderDir != "/var/lib/pkgfleet/builder" ||
		c.FileStorage.Location != "/var/lib/pkgfleet/packages" || c.Server.TempDir != "/tmp" {
		t.Fatalf("derived paths = %q %q %q %q", c.Server.DataDir, c.Git.BuilderDir, c.FileStorage.Location, c.Server.TempDir)
	}
	if c.Worker.Concurrency < 1 || c.Redis.Address != "localhost:6379" {
		t.Fatalf("worker/redis defaults = %+v %+v", c.Worker, c.Redis)
	}
}

func TestFileThenEnvironmentOverride(t *testing.T) {
	t.Parallel()
	p := writeFile(t, `
; a comment
[Server]
DataDir = /srv/pkgfleet

[git]
buildconcurrency = 4
AllowUnsandboxedGitBuilds
BuildMemory = 512MiB
BuildTimeout = 90m
`)
	env := map[string]string{"PKGFLEET_GIT_BUILDCONCURRENCY": "7", "TMPDIR": "/var/tmp"}
	c, err := Load(Source{File: p, Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	if c.Git.BuildConcurrency != 7 {
		t.Errorf("BuildConcurrency = %d, want the environment's 7", c.Git.BuildConcurrency)
	}
	if !c.Git.AllowUnsandboxedGitBuilds || c.Git.BuildMemory != 512<<20 || c.Git.BuildTimeout != 90*time.Minute {
		t.Errorf("git = %+v", c.Git)
	}
	if c.Git.BuilderDir != "/srv/pkgfleet/builder" || c.Server.TempDir != "/var/tmp" {
		t.Errorf("derived: BuilderDir %q TempDir %q", c.Git.BuilderDir, c.Server.TempDir)
	}
	if c.Dir() != filepath.Dir(p) {
		t.Errorf("Dir() = %q", c.Dir())
	}
}

func TestBadConfigNamesFileLineAndKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, content, want string
	}{
		{"unknown key", "[Server]\nDataDir = /x\n\n[Git]\nBogusKey = 1\n", ":5: unknown setting Git.BogusKey"},
		{"bad number", "[Git]\nBuildConcurrency = many\n", `:2: Git.BuildConcurrency: "many" is not a whole number`},
		{"bad duration", "[Git]\n\n\nPollInterval = soon\n", `:4: Git.PollInterval: "soon" is not a duration`},
		{"bad bool", "[Git]\nBuildNetwork = maybe\n", `:2: Git.BuildNetwork: "maybe" is not a boolean`},
		{"bad size", "[Git]\nBuildMemory = lots\n", `:2: Git.BuildMemory: "lots" is not a size`},
		{"unknown section", "[Nope]\nx = 1\n", `unknown section [Nope]`},
		{"relative path", "[Server]\nDataDir = data\n", "Server.DataDir must be an absolute path"},
		{"zero retries", "[Git]\nBuildRetries = 0\n", "Git.BuildRetries must be at least 1"},
		{"fence longer than the slot lease allows", "[Worker]\nFenceAfter = 50s\n", "Worker.FenceAfter must be between 1s and 45s"},
		{"sentinel without a master name", "[Redis]\nSentinelAddresses = a:26379\nSentinelMaster =\n", "Redis.SentinelMaster must name the master"},
		{"sentinel without replicas to wait for", "[Redis]\nSentinelAddresses = a:26379\nWaitReplicas = 0\n", "Redis.WaitReplicas must be at least 1 with Sentinel"},
		{"durability wait longer than a confirmation's period", "[Redis]\nSentinelAddresses = a:26379\nWaitTimeout = 5s\n", "T + W <= 3/4 x L (45s, L the build slot's lease) and 4 x W < T"},
		{"fence and wait beyond the lease", "[Worker]\nFenceAfter = 44s\n[Redis]\nSentinelAddresses = a:26379\nWaitTimeout = 2s\n", "T + W <= 3/4 x L"},
		{"task checks too slow", "[Worker]\nTaskCheckInterval = 2m\n", "Worker.TaskCheckInterval must be between 1ms and 1m"},
		{"reconciler grace within a stopping build's time", "[Worker]\nFenceAfter = 20s\n\n[Reconcile]\nGrace = 45s\n", "Reconcile.Grace must exceed Worker.FenceAfter + asynq's task lease (20s + 30s = 50s)"},
		{"reconciler passes too often", "[Reconcile]\nInterval = 10ms\n", "Reconcile.Interval must be at least 1s"},
		{"syntax", "[Git\n", "expected right bracket"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := writeFile(t, tc.content)
			_, err := Load(Source{File: p, Getenv: noEnv})
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error = %q, want it to name %s and contain %q", err, p, tc.want)
			}
		})
	}
}

func TestBadEnvironmentValueNamesTheVariable(t *testing.T) {
	t.Parallel()
	_, err := Load(Source{Getenv: func(k string) string {
		if k == "PKGFLEET_GIT_BUILDRETRIES" {
			return "-1"
		}
		return ""
	}})
	if err == nil || !strings.Contains(err.Error(), "PKGFLEET_GIT_BUILDRETRIES") {
		t.Fatalf("error = %v, want it to name PKGFLEET_GIT_BUILDRETRIES", err)
	}
}

func TestHelpListsEverySettingOnce(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	WriteHelp(&buf)
	seen := map[string]bool{}
	for _, s := range Settings() {
		if seen[s.Name()] {
			t.Errorf("%s declared twice", s.Name())
		}
		seen[s.Name()] = true
		if !strings.Contains(buf.String(), s.Name()) || !strings.Contains(buf.String(), s.EnvName()) {
			t.Errorf("help lacks %s / %s", s.Name(), s.EnvName())
		}
		if s.Doc == "" {
			t.Errorf("%s has no doc string", s.Name())
		}
	}
}

func TestSizes(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Size{"2GiB": 2 << 30, "512MiB": 512 << 20, "100MB": 100e6, "1048576": 1 << 20, "4k": 4 << 10} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1", "1.5GiB", "99999999999999999999"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded", bad)
		}
	}
	if s := Size(2 << 30).String(); s != "2GiB" {
		t.Errorf("String() = %q", s)
	}
}

// Git.AllowedHosts is a list: the key repeated in the file (gcfg's
// multi-valued variable) or comma-separated; the environment replaces the
// file's list; an entry that is no host, address or CIDR names the setting.
func TestAllowedHostsIsAList(t *testing.T) {
	t.Parallel()
	p := writeFile(t, "[Server]\nDataDir = /srv/pkgfleet\n[Git]\nAllowedHosts = git.corp.example\nAllowedHosts = 10.0.0.0/8, *.mirror.example\n")
	c, err := Load(Source{File: p, Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Git.AllowedHosts, " "); got != "git.corp.example 10.0.0.0/8 *.mirror.example" {
		t.Errorf("from the file: %q", got)
	}
	c, err = Load(Source{File: p, Getenv: func(k string) string {
		return map[string]string{"PKGFLEET_GIT_ALLOWEDHOSTS": "127.0.0.1,::1"}[k]
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Git.AllowedHosts, " "); got != "127.0.0.1 ::1" {
		t.Errorf("the environment over the file: %q", got)
	}
	if _, err := c.Outbound(); err != nil {
		t.Error(err)
	}
	_, err = Load(Source{Getenv: func(k string) string {
		return map[string]string{"PKGFLEET_GIT_ALLOWEDHOSTS": "https://x/"}[k]
	}})
	if err == nil || !strings.Contains(err.Error(), "Git.AllowedHosts") {
		t.Errorf("a URL as an entry: %v", err)
	}
}
