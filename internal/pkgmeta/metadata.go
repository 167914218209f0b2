package pkgmeta

import (
	"fmt"
	"strings"
)

// Metadata is one metadata file read as its own tool reads it: Python's
// email parser for PKG-INFO and METADATA, R's read.dcf for DESCRIPTION.
type Metadata struct {
	// Fields holds the value each field has for the tool: Python's
	// msg[name] (the first), R's read.dcf (the last).
	Fields Fields
	// All holds every value of each field in file order (Python's
	// msg.get_all), for the fields the specification lets repeat.
	All map[string][]string
	// Body is what follows the headers of core metadata: the description.
	Body string
	// Warnings are the malformations the tool accepted, one line each,
	// naming the file and the line.
	Warnings []string

	names      map[string]string // core metadata: the spelling of each field by its lower-case name
	headersEnd line              // core metadata: the line that ended the headers, if one did
}

// Error is a metadata file its own tool refuses: one line that names the
// file, the line and what the tool expected, with a remedy when one is
// known.
type Error struct {
	File     string
	Line     int // 0: the file as a whole
	Expected string
	Remedy   string
}

func (e *Error) Error() string {
	s := e.File + ": "
	if e.Line > 0 {
		s += fmt.Sprintf("line %d: ", e.Line)
	}
	s += e.Expected
	if e.Remedy != "" {
		s += "; " + e.Remedy
	}
	return s
}

func (m *Metadata) warnf(file string, line int, format string, args ...any) {
	w := file + ": "
	if line > 0 {
		w += fmt.Sprintf("line %d: ", line)
	}
	m.Warnings = append(m.Warnings, w+fmt.Sprintf(format, args...))
}

// line is one line of a metadata file, without its line break.
type line struct {
	text string
	n    int  // 1-based
	eol  bool // it ended in a line break
}

// lineEndings describes the line breaks other than LF that a reader
// turned into LF, for a warning; "" when every one was LF.
func lineEndings(crlf, cr int) string {
	var kinds []string
	if crlf > 0 {
		kinds = append(kinds, fmt.Sprintf("%d CRLF", crlf))
	}
	if cr > 0 {
		kinds = append(kinds, fmt.Sprintf("%d bare CR", cr))
	}
	return strings.Join(kinds, " and ")
}
