package testenv

import (
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/config"
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
