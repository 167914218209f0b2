package pkgmeta

import (
	"fmt"
	"strings"
)

// DESCRIPTION is read as R CMD build reads it: tools:::.read_description,
// which is read.dcf with the fields of .keep_white_description_fields
// kept verbatim, and exactly one record. The rules are those of R's
// do_readDCF (src/main/dcf.c) and of its connections, which end a line at
// LF, CRLF or CR.

// keepWhite are the fields R keeps verbatim: continuation lines are not
// trimmed (tools:::.keep_white_description_fields).
var keepWhite = map[string]bool{"Description": true, "Authors@R": true, "Author": true, "Built": true, "Packaged": true}

// ParseDESCRIPTION reads an R DESCRIPTION file. file names it in warnings
// and errors.
func ParseDESCRIPTION(file string, data []byte) (*Metadata, error) {
	m, records, err := parseDCF(file, data)
	if err != nil {
		return nil, err
	}
	switch {
	case records == 0:
		return nil, &Error{File: file, Expected: "no fields; R expects \"Field: value\" lines"}
	case records > 1:
		return nil, &Error{File: file, Line: m.secondRecord,
			Expected: "a blank line ends the fields and more follow; R CMD build expects one record (\"contains a blank line\")",
			Remedy:   "remove the blank line, or write an empty line inside a field as \" .\""}
	}
	return &m.Metadata, nil
}

type dcf struct {
	Metadata
	secondRecord int // the line where a second record begins
}

// parseDCF is read.dcf: the first record's fields and how many records
// the file has.
func parseDCF(file string, data []byte) (*dcf, int, error) {
	m := &dcf{Metadata: Metadata{Fields: Fields{}, All: map[string][]string{}}}
	lines, crlf, cr := splitR(data)
	if e := lineEndings(crlf, cr); e != "" {
		m.warnf(file, 0, "%s line endings, read as LF as R does", e)
	}
	records := 0
	var (
		field      string          // the field being read; "" before one
		value      strings.Builder // its value so far, in the first record
		fold       bool            // it is trimmed (not one of keepWhite)
		dots       int             // " ." lines not yet added (R carries them to the next field)
		blankSkip  = true
		firstLines = map[string]int{}
	)
	// commit stores the field being read, once it is complete.
	commit := func() {
		if field != "" && records == 1 {
			m.Fields[field] = value.String()
			m.All[field] = append(m.All[field], value.String())
		}
		value.Reset()
	}
	for _, l := range lines {
		text := l.text
		if i := strings.IndexByte(text, 0); i >= 0 {
			text = text[:i] // R reads the line as a C string
		}
		if strings.Trim(text, " \t") == "" {
			// The first blank line after a record ends it.
			if !blankSkip {
				commit()
				blankSkip, field, dots = true, "", 0
			}
			continue
		}
		if blankSkip {
			records++
			if records == 2 {
				m.secondRecord = l.n
			}
		}
		blankSkip = false
		if text[0] == ' ' || text[0] == '\t' {
			if field == "" {
				return nil, 0, &Error{File: file, Line: l.n,
					Expected: fmt.Sprintf("continuation line before any field; R's read.dcf expects \"Field: value\" first (\"Found continuation line starting '%s ...' at begin of record.\")", lineStart(text))}
			}
			if records > 1 {
				continue
			}
			dot := strings.Trim(text, " \t\v\f") == "." && strings.TrimLeft(text, " \t\v\f") != text
			if dot && fold {
				dots++
				continue
			}
			cont := text
			if fold {
				cont = strings.TrimRight(strings.TrimLeft(text, " \t"), " \t")
			}
			if value.Len() > 0 || !fold {
				value.WriteByte('\n')
			}
			if !dot {
				value.WriteString(strings.Repeat("\n", dots))
				value.WriteString(cont)
				dots = 0
			}
			continue
		}
		name, first, ok := strings.Cut(text, ":")
		if !ok || name == "" {
			return nil, 0, &Error{File: file, Line: l.n,
				Expected: fmt.Sprintf("\"Field: value\" or an indented continuation line; R's read.dcf refuses this one (\"Line starting '%s ...' is malformed!\")", lineStart(text))}
		}
		commit()
		if records > 1 {
			field = name
			continue
		}
		field, fold = name, !keepWhite[name]
		first = strings.TrimLeft(first, " \t")
		if fold {
			first = strings.TrimRight(first, " \t")
		}
		value.WriteString(first)
		if first, seen := firstLines[name]; seen {
			m.warnf(file, l.n, "%s repeated (first at line %d); R's read.dcf keeps the last", name, first)
		} else {
			firstLines[name] = l.n
		}
		if strings.ContainsAny(name, " \t") {
			m.warnf(file, l.n, "field name %q has a space; R's read.dcf accepts it, R CMD check does not", name)
		}
	}
	commit()
	return m, records, nil
}

// lineStart is the start of a line as R's messages quote it (20 bytes).
func lineStart(s string) string {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

// splitR splits data into lines as R's connections read text: CRLF and
// CR are LF, and a CR right after a CR is a line of its own.
func splitR(data []byte) (lines []line, crlf, cr int) {
	var b []byte
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c == '\r' {
			switch {
			case i+1 < len(data) && data[i+1] == '\n':
				crlf++
				i++
			case i+1 < len(data) && data[i+1] == '\r':
				// Rconn_fgetc maps the second CR to LF without
				// looking past it.
				cr += 2
				lines = append(lines, line{string(b), len(lines) + 1, true})
				b = b[:0]
				i++
			default:
				cr++
			}
			c = '\n'
		}
		if c == '\n' {
			lines = append(lines, line{string(b), len(lines) + 1, true})
			b = b[:0]
			continue
		}
		b = append(b, c)
	}
	if len(b) > 0 {
		lines = append(lines, line{string(b), len(lines) + 1, false})
	}
	return lines, crlf, cr
}
