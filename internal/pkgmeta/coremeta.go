package pkgmeta

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The core metadata specification says PKG-INFO and METADATA are read
// with Python's email parser (compat32, as importlib.metadata reads
// them), so that is the reader here, rule for rule: CPython's
// email/feedparser.py (FeedParser._parsegen and _parse_headers) and
// email/_policybase.py (Compat32.header_source_parse). Where the parser
// records a defect and goes on, this reader goes on and records a
// warning.

// coreFields are the core metadata fields by their lower-case names, with
// the spelling the specification gives them and whether they may repeat.
var coreFields = func() map[string]coreField {
	m := map[string]coreField{}
	for _, name := range []string{"Metadata-Version", "Name", "Version", "Summary", "Description",
		"Description-Content-Type", "Keywords", "Home-page", "Download-URL", "Author", "Author-email",
		"Maintainer", "Maintainer-email", "License", "License-Expression", "Requires-Python"} {
		m[strings.ToLower(name)] = coreField{name, false}
	}
	for _, name := range []string{"Dynamic", "Platform", "Supported-Platform", "License-File", "Classifier",
		"Requires-Dist", "Requires-External", "Project-URL", "Provides-Extra", "Provides-Dist",
		"Obsoletes-Dist", "Requires", "Provides", "Obsoletes"} {
		m[strings.ToLower(name)] = coreField{name, true}
	}
	return m
}()

type coreField struct {
	name     string
	multiple bool
}

// ParseCoreMetadata reads Python core metadata (PKG-INFO, METADATA) as
// importlib.metadata does: the text decoded as UTF-8 with universal
// newlines, then Python's email parser, then its _adapters.Message, which
// dedents values of several lines and makes the body the last
// Description. file names the file in warnings and errors.
func ParseCoreMetadata(file string, data []byte) (*Metadata, error) {
	if bad := invalidUTF8At(data); bad >= 0 {
		return nil, &Error{File: file, Line: 1 + countBreaks(data[:bad]),
			Expected: fmt.Sprintf("byte %#02x is not UTF-8; importlib.metadata reads core metadata as UTF-8 and refuses it", data[bad]),
			Remedy:   "write the file in UTF-8"}
	}
	m := &Metadata{Fields: Fields{}, All: map[string][]string{}, names: map[string]string{}}
	lines, crlf, cr := splitUniversal(data)
	if e := lineEndings(crlf, cr); e != "" {
		m.warnf(file, 0, "%s line endings, read as LF (importlib.metadata reads with universal newlines)", e)
	}
	if bytes.HasPrefix(data, []byte("\uFEFF")) {
		m.warnf(file, 1, "starts with a byte-order mark, which Python's email parser takes for the start of the description: no header is read")
	}

	// FeedParser._parsegen: headers run up to the first line that is
	// neither a header nor a continuation. A blank line there is the
	// separator and dropped; any other line is the description's first.
	end, body := len(lines), len(lines)
	for i, l := range lines {
		if headerLine(l.text) {
			continue
		}
		end, body = i, i+1
		m.headersEnd = l
		if l.text != "" {
			body = i
			m.warnf(file, l.n, "no blank line between the headers and the description; read as Python's email parser does (MissingHeaderBodySeparatorDefect): the headers end at line %d and this line begins the description (flit_core 4.0 writes its metadata so)", l.n-1)
		}
		break
	}
	headers := lines[:end]

	// FeedParser._parse_headers.
	var cur []line // the header being read: its first line and continuations
	flush := func() {
		if cur == nil {
			return
		}
		name, value, _ := strings.Cut(cur[0].text, ":")
		var b strings.Builder
		b.WriteString(strings.TrimLeft(value, " \t"))
		for i, l := range cur {
			if i > 0 {
				b.WriteString(l.text)
			}
			if l.eol {
				b.WriteByte('\n')
			}
		}
		m.addHeader(file, name, redent(strings.TrimRight(b.String(), "\r\n")), cur[0].n)
		cur = nil
	}
	var pushedBack []line
	for i, l := range headers {
		if l.text[0] == ' ' || l.text[0] == '\t' {
			if cur == nil {
				m.warnf(file, l.n, "continuation line with no header before it; Python's email parser drops it (FirstHeaderLineIsContinuationDefect)")
				continue
			}
			cur = append(cur, l)
			continue
		}
		flush()
		if strings.HasPrefix(l.text, "From ") {
			switch i {
			case 0:
				m.warnf(file, l.n, "an mbox \"From \" line; Python's email parser takes it for the envelope and not a header")
			case len(headers) - 1:
				m.warnf(file, l.n, "a \"From \" line after the headers; Python's email parser makes it the description's first line")
				pushedBack = append(pushedBack, l)
			default:
				m.warnf(file, l.n, "a \"From \" line among the headers; Python's email parser drops it (MisplacedEnvelopeHeaderDefect)")
			}
			continue
		}
		if l.text[0] == ':' {
			m.warnf(file, l.n, "a header with no name; Python's email parser drops it (InvalidHeaderDefect)")
			continue
		}
		cur = []line{l}
	}
	flush()

	var b strings.Builder
	for _, l := range append(pushedBack, lines[body:]...) {
		b.WriteString(l.text)
		if l.eol {
			b.WriteByte('\n')
		}
	}
	m.Body = b.String()
	if m.Body != "" {
		m.addHeader(file, "Description", m.Body, 0)
	}
	return m, nil
}

// addHeader records one header as email.message.Message does: names are
// case-insensitive and msg[name] is the first value.
func (m *Metadata) addHeader(file, name, value string, n int) {
	key := name
	known, ok := coreFields[strings.ToLower(name)]
	if ok {
		key = known.name
	} else if k, seen := m.names[strings.ToLower(name)]; seen {
		key = k
	} else {
		m.names[strings.ToLower(name)] = name
	}
	if _, seen := m.Fields[key]; !seen {
		m.Fields[key] = value
	} else if ok && !known.multiple && n > 0 {
		m.warnf(file, n, "%s repeated, which the core metadata specification does not allow; Python's email parser reads the first", key)
	}
	m.All[key] = append(m.All[key], value)
}

// redent is importlib.metadata's correction for RFC 822 indentation
// (_adapters.Message._repair_headers): a value of several lines is
// dedented as textwrap.dedent(8 spaces + value) dedents it.
func redent(v string) string {
	if !strings.Contains(v, "\n") {
		return v
	}
	lines := strings.Split("        "+v, "\n")
	margin, found := "", false
	for i, l := range lines {
		rest := strings.TrimLeft(l, " \t")
		if rest == "" {
			lines[i] = "" // whitespace-only lines are emptied
			continue
		}
		indent := l[:len(l)-len(rest)]
		switch {
		case !found:
			margin, found = indent, true
		case strings.HasPrefix(indent, margin):
		case strings.HasPrefix(margin, indent):
			margin = indent
		default:
			j := 0
			for j < len(margin) && j < len(indent) && margin[j] == indent[j] {
				j++
			}
			margin = margin[:j]
		}
	}
	if margin != "" {
		for i, l := range lines {
			lines[i] = strings.TrimPrefix(l, margin)
		}
	}
	return strings.Join(lines, "\n")
}

// headerLine is feedparser's headerRE: a line the email parser still
// takes for part of the headers.
func headerLine(s string) bool {
	if strings.HasPrefix(s, "From ") || s != "" && (s[0] == ' ' || s[0] == '\t') {
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ':' {
			return true
		}
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return false
}

// splitUniversal splits data into lines at LF, CRLF and CR, as Python's
// universal newlines do, counting the CRLFs and bare CRs.
func splitUniversal(data []byte) (lines []line, crlf, cr int) {
	start := 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\n':
		case '\r':
			if i+1 < len(data) && data[i+1] == '\n' {
				crlf++
				lines = append(lines, line{string(data[start:i]), len(lines) + 1, true})
				i++
				start = i + 1
				continue
			}
			cr++
		default:
			continue
		}
		lines = append(lines, line{string(data[start:i]), len(lines) + 1, true})
		start = i + 1
	}
	if start < len(data) {
		lines = append(lines, line{string(data[start:]), len(lines) + 1, false})
	}
	return lines, crlf, cr
}

// invalidUTF8At is the offset of the first byte that is not UTF-8, or -1.
func invalidUTF8At(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return -1
}

// countBreaks counts line breaks as universal newlines do.
func countBreaks(data []byte) int {
	return bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) - bytes.Count(data, []byte("\r\n"))
}

// NameVersion returns the Name and Version headers of core metadata, or
// an Error that says which is missing and where the headers ended.
func (m *Metadata) NameVersion(file string) (name, version string, err error) {
	name, version = strings.TrimSpace(m.Fields["Name"]), strings.TrimSpace(m.Fields["Version"])
	if name != "" && version != "" {
		return name, version, nil
	}
	missing := "Name"
	if name != "" {
		missing = "Version"
	} else if version == "" {
		missing = "Name and Version"
	}
	e := &Error{File: file, Expected: "no " + missing + " header"}
	switch l := m.headersEnd; {
	case l.n == 1 && strings.HasPrefix(l.text, "\uFEFF"):
		e.Line, e.Expected = 1, e.Expected+": a byte-order mark starts the file, and Python's email parser reads no header after it"
		e.Remedy = "write the file without a byte-order mark"
	case l.text != "":
		e.Line = l.n
		e.Expected += fmt.Sprintf(": Python's email parser ends the headers at this line, which is not \"Field: value\" (%q)", lineStart(l.text))
		e.Remedy = "the field names before a colon are printable ASCII without spaces"
	case l.n > 0:
		e.Line = l.n
		e.Expected += ": Python's email parser ends the headers at this blank line"
	}
	return "", "", e
}
