package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/config"
)

func declared(name string) bool {
	for _, s := range config.Settings() {
		if strings.EqualFold(s.Name(), name) {
			return true
		}
	}
	return false
}

// gcfgValues reads "[Section]" / "Key = value" lines into "Section.Key" →
// value, unquoting quoted values; enough for the files the chart and compose
// write.
func gcfgValues(t testing.TB, text string) map[string]string {
	t.Helper()
	out := map[string]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == ';' || line[0] == '#':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("gcfg line %q has no =", line)
			}
			v = strings.TrimSpace(v)
			if strings.HasPrefix(v, `"`) {
				u, err := strconv.Unquote(v)
				if err != nil {
					t.Fatalf("gcfg value %s: %v", v, err)
				}
				v = u
			}
			out[section+"."+strings.TrimSpace(k)] = v
		}
	}
	return out
}

// loadGcfg loads a config file the way pkgfleet-api and pkgfleet-worker do
// (no environment), and returns it with its raw values.
func loadGcfg(t testing.TB, text string) (*config.Config, map[string]string) {
	t.Helper()
	values := gcfgValues(t, text)
	file := filepath.Join(t.TempDir(), "pkgfleet.gcfg")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Source{File: file, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatalf("pkgfleet would refuse this config: %v\n%s", err, text)
	}
	return cfg, values
}
