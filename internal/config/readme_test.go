package config

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the README's settings table")

const (
	beginMark = "<!-- settings:begin (generated from internal/config/settings.go; go test ./internal/config -run README -update) -->\n"
	endMark   = "<!-- settings:end -->"
)

// The README's settings table is generated from the one declaration of
// each setting, so it cannot drift from the code.
func TestREADMESettingsTableIsCurrent(t *testing.T) {
	const path = "../../README.md"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	writeMarkdown(&table)
	s := string(data)
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the settings markers %q … %q", beginMark, endMark)
	}
	want := s[:i+len(beginMark)] + table.String() + s[j:]
	if want == s {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("README.md's settings table is out of date: go test ./internal/config -run README -update")
}
