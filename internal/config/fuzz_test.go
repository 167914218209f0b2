package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad: any config file either loads into valid settings or fails
// with an error naming the file.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"[Server]\nDataDir = /x\n", "[Git]\nBuildConcurrency = 4\n", "[Git]\nBogus = 1\n", "[",
		"[Git]\nAllowUnsandboxedGitBuilds\n", "[Git \"sub\"]\nx=1\n", "; c\n[HTTP]\nListen = \"a b\"\n",
		"[Git]\nBuildMemory = 99999999999TiB\n", "[Git]\nPollInterval = -5m\n",
	} {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content string) {
		p := filepath.Join(dir, "fuzz.gcfg")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(Source{File: p, Getenv: func(string) string { return "" }})
		if err != nil {
			if !strings.Contains(err.Error(), p) && !strings.Contains(err.Error(), "config") {
				t.Fatalf("error does not say where: %v", err)
			}
			return
		}
		if c.Validate() != nil {
			t.Fatal("Load returned settings that do not validate")
		}
	})
}
