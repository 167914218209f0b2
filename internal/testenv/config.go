package testenv

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
)

// Settings are the settings a test fleet starts from: its data and
// temporary directories below dir, file:// remotes allowed (the tests'
// repositories are local), and database db of r. Callers add their own.
func (r *Redis) Settings(dir string, db int) map[string]string {
	return map[string]string{
		"PKGFLEET_SERVER_DATADIR":    filepath.Join(dir, "data"),
		"PKGFLEET_SERVER_TEMPDIR":    filepath.Join(dir, "tmp"),
		"PKGFLEET_GIT_ALLOWFILEURLS": "true",
		"PKGFLEET_REDIS_ADDRESS":     r.Socket,
		"PKGFLEET_REDIS_DB":          strconv.Itoa(db),
	}
}

// Config loads the configuration that env's PKGFLEET_ variables give, as
// a process would from its environment.
func Config(t testing.TB, env map[string]string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Source{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Loopback is the Git.AllowedHosts value of a test whose git remotes or
// package indexes listen on this host: the outbound policy refuses
// loopback by default (internal/netpolicy), so such a test allows it
// explicitly, by setting, as an admin would.
const Loopback = "127.0.0.0/8, ::1, localhost"

// AllowLoopback lets the git remotes and doors of a test fleet configured
// by env reach loopback (Loopback), and returns env.
func AllowLoopback(env map[string]string) map[string]string {
	env["PKGFLEET_GIT_ALLOWEDHOSTS"] = Loopback
	return env
}

// LoopbackPolicy is the outbound policy of a fleet configured with
// AllowLoopback, for tests that make a git client or a door themselves.
func LoopbackPolicy(t testing.TB) *netpolicy.Policy {
	t.Helper()
	p, err := netpolicy.New(strings.Split(Loopback, ", "))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
