package pkgmeta

import (
	"errors"
	"strings"
	"testing"
)

// Each malformation Python or R accepts is a warning naming the file and
// the line; each they refuse is one error naming the file, the line, what
// the tool expected and, where one is known, the remedy.
func TestMalformationsAreWarnedOrRefusedWithFileAndLine(t *testing.T) {
	t.Parallel()
	core := func(data string) (*Metadata, error) {
		m, err := ParseCoreMetadata("PKG-INFO", []byte(data))
		if err == nil {
			_, _, err = m.NameVersion("PKG-INFO")
		}
		return m, err
	}
	desc := func(data string) (*Metadata, error) { return ParseDESCRIPTION("DESCRIPTION", []byte(data)) }
	for _, c := range []struct {
		name  string
		parse func(string) (*Metadata, error)
		data  string
		warn  string // a warning that must be given ("" none)
		err   string // the refusal ("" none)
	}{
		{"flit_core 4.0's missing separator", core, "Name: a\nVersion: 1\n# A\n", "PKG-INFO: line 3: no blank line between the headers and the description", ""},
		{"CRLF", core, "Name: a\r\nVersion: 1\r\n", "PKG-INFO: 2 CRLF line endings", ""},
		{"a repeated Name", core, "Name: a\nVersion: 1\nName: b\n", "PKG-INFO: line 3: Name repeated", ""},
		{"a repeated Classifier", core, "Name: a\nVersion: 1\nClassifier: x\nClassifier: y\n", "", ""},
		{"a continuation first", core, " x\nName: a\nVersion: 1\n", "PKG-INFO: line 1: continuation line with no header", ""},
		{"not UTF-8", core, "Name: a\nVersion: 1\nAuthor: \xe9\n", "", "PKG-INFO: line 3: byte 0xe9 is not UTF-8"},
		{"a byte-order mark", core, "\uFEFFName: a\nVersion: 1\n", "", "PKG-INFO: line 1: no Name and Version header: a byte-order mark"},
		{"a header name with a space", core, "Home page: x\nName: a\nVersion: 1\n", "", "PKG-INFO: line 1: no Name and Version header: Python's email parser ends the headers at this line"},
		{"R: CRLF", desc, "Package: ab\r\nVersion: 1\r\n", "DESCRIPTION: 2 CRLF line endings", ""},
		{"R: a repeated field", desc, "Package: ab\nVersion: 1\nVersion: 2\n", "DESCRIPTION: line 3: Version repeated (first at line 2); R's read.dcf keeps the last", ""},
		{"R: a continuation first", desc, " Package: ab\n", "", "DESCRIPTION: line 1: continuation line before any field"},
		{"R: no colon", desc, "Package: ab\nno colon\n", "", "DESCRIPTION: line 2: \"Field: value\" or an indented continuation line"},
		{"R: two records", desc, "Package: ab\n\nVersion: 1\n", "", "DESCRIPTION: line 3: a blank line ends the fields and more follow; R CMD build expects one record (\"contains a blank line\"); remove the blank line"},
	} {
		m, err := c.parse(c.data)
		var e *Error
		switch {
		case c.err != "" && (err == nil || !strings.HasPrefix(err.Error(), c.err) || !errors.As(err, &e) || e.Line == 0):
			t.Errorf("%s: error %v, want %q…", c.name, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.err == "" && c.warn == "" && len(m.Warnings) > 0:
			t.Errorf("%s: warnings %q, want none", c.name, m.Warnings)
		case c.warn != "" && (m == nil || !hasPrefix(m.Warnings, c.warn)):
			t.Errorf("%s: warnings %q, want %q…", c.name, warnings(m), c.warn)
		}
	}
}

func hasPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func warnings(m *Metadata) []string {
	if m == nil {
		return nil
	}
	return m.Warnings
}
