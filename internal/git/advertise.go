package git

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// refCollector keeps what a listing names that Refs holds: HEAD's target,
// branches, and tags peeled to their commits. Every listing (git
// ls-remote's output, a smart-protocol advertisement, a local
// repository's files) goes through it, so they agree on what is kept.
type refCollector struct {
	refs   Refs
	peeled map[string]string
}

func newRefCollector() *refCollector {
	return &refCollector{refs: Refs{Branches: map[string]string{}, Tags: map[string]string{}}, peeled: map[string]string{}}
}

// ref records one advertised ref, or the commit an annotated tag peels
// to when name ends in ^{}.
func (c *refCollector) ref(name, sha string) {
	switch {
	case strings.HasPrefix(name, "refs/heads/"):
		c.refs.Branches[strings.TrimPrefix(name, "refs/heads/")] = sha
	case strings.HasSuffix(name, "^{}"):
		if tag, ok := strings.CutPrefix(strings.TrimSuffix(name, "^{}"), "refs/tags/"); ok {
			c.peeled[tag] = sha
		}
	case strings.HasPrefix(name, "refs/tags/"):
		c.refs.Tags[strings.TrimPrefix(name, "refs/tags/")] = sha
	}
}

// head records HEAD's symbolic target (refs/heads/main).
func (c *refCollector) head(target string) {
	c.refs.Head = strings.TrimPrefix(target, "refs/heads/")
}

func (c *refCollector) done() *Refs {
	for tag, sha := range c.peeled {
		if _, ok := c.refs.Tags[tag]; ok {
			c.refs.Tags[tag] = sha // annotated tags: the commit, not the tag object
		}
	}
	return &c.refs
}

// listError is a listing's failure as an API client may see it (say), and
// as the operator's log has it (detail). A server's own words are never
// in say. err, when set, is the cause (a time-out, a cancellation).
type listError struct {
	say, detail string
	err         error
}

func (e *listError) Error() string { return e.say + ": " + e.detail }
func (e *listError) Unwrap() error { return e.err }

const sayRead = "could not read the remote (the server's log has the error)"

// readFailed is a failure to read an advertisement: its format's
// (malformed), its size's, or the connection's (a time-out, a reset).
func readFailed(err error) error {
	var fe *formatError
	switch {
	case errors.Is(err, errTooManyRefs):
		return err
	case errors.As(err, &fe), errors.Is(err, io.ErrUnexpectedEOF):
		return malformed("%v", err)
	}
	return &listError{say: sayRead, detail: err.Error(), err: err}
}

const (
	sayNotAdvertisement = "the remote's answer is not a git ref advertisement"
	sayAuth             = "the remote refused the credentials, or needs some"
	sayNoRepo           = "the remote has no such repository"
)

func malformed(format string, a ...any) error {
	return &listError{say: sayNotAdvertisement, detail: fmt.Sprintf(format, a...)}
}

// validSHA is what an advertised object name must look like.
func validSHA(b []byte) bool {
	if len(b) != 40 && len(b) != 64 {
		return false
	}
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// advertisement is the start of a smart-HTTP info/refs answer: which
// protocol the server speaks and, for v2, whether it serves ls-refs and
// in which object format.
type advertisement struct {
	v2           bool
	objectFormat string // v2's object-format capability; "" for sha1
}

// readInfoRefs reads an info/refs answer. A v0 server's refs are
// collected into c; a v2 server's capabilities are returned for the
// ls-refs request that follows.
func readInfoRefs(r io.Reader, budget int64, c *refCollector) (advertisement, error) {
	pr := &pktReader{r: r, budget: budget}
	kind, line, err := pr.next()
	if err != nil {
		return advertisement{}, readFailed(err)
	}
	// The smart-HTTP answer starts with "# service=git-upload-pack" and a
	// flush; a v2 server may leave them out.
	if kind == pktData && bytes.HasPrefix(line, []byte("# service=")) {
		if string(line) != "# service=git-upload-pack" {
			return advertisement{}, malformed("unexpected service line %.40q", line)
		}
		if kind, _, err = pr.next(); err != nil || kind != pktFlush {
			return advertisement{}, malformed("no flush after the service line")
		}
		if kind, line, err = pr.next(); err != nil {
			return advertisement{}, readFailed(err)
		}
	}
	if kind == pktData && string(line) == "version 2" {
		return readV2Capabilities(pr)
	}
	return advertisement{}, readV0(pr, kind, line, c)
}

// readV0 reads a protocol v0 (or v1) advertisement whose first pkt-line
// is (kind, line): "sha name\0capabilities", then "sha name" lines, then
// a flush. HEAD's target is the symref capability.
func readV0(pr *pktReader, kind int, line []byte, c *refCollector) error {
	next := func() error {
		var err error
		if kind, line, err = pr.next(); err != nil {
			return readFailed(err)
		}
		return nil
	}
	if kind == pktData && string(line) == "version 1" {
		if err := next(); err != nil {
			return err
		}
	}
	if kind == pktFlush {
		return nil // nothing advertised
	}
	if kind != pktData {
		return malformed("unexpected pkt-line kind %d", kind)
	}
	if bytes.HasPrefix(line, []byte("ERR ")) {
		return &listError{say: "the remote answered with an error", detail: fmt.Sprintf("%.200q", line)}
	}
	ref, caps, _ := bytes.Cut(line, []byte{0})
	for _, capability := range bytes.Fields(caps) {
		if v, ok := bytes.CutPrefix(capability, []byte("symref=HEAD:")); ok {
			c.head(string(v))
		}
	}
	if sha, name, ok := bytes.Cut(ref, []byte{' '}); ok && string(name) == "capabilities^{}" && validSHA(sha) {
		ref = nil // an empty repository's only line
	}
	for {
		if ref != nil {
			if err := v0Line(pktData, ref, c); err != nil {
				return err
			}
		}
		if err := next(); err != nil {
			return err
		}
		if kind == pktFlush {
			return nil
		}
		if kind != pktData {
			return malformed("unexpected pkt-line kind %d", kind)
		}
		ref = line
	}
}

// v0Line reads one ref line after the first of a v0 advertisement.
func v0Line(kind int, line []byte, c *refCollector) error {
	if kind != pktData {
		return malformed("unexpected pkt-line kind %d", kind)
	}
	sha, name, ok := bytes.Cut(line, []byte{' '})
	if !ok || !validSHA(sha) || len(name) == 0 || bytes.IndexByte(name, 0) >= 0 {
		return malformed("malformed ref line %.80q", line)
	}
	c.ref(string(name), string(sha))
	return nil
}

// readV2Capabilities reads a v2 server's capability lines up to the flush.
func readV2Capabilities(pr *pktReader) (advertisement, error) {
	ad := advertisement{v2: true}
	lsRefs := false
	for {
		kind, line, err := pr.next()
		if err != nil {
			return ad, readFailed(err)
		}
		if kind == pktFlush {
			break
		}
		if kind != pktData {
			return ad, malformed("unexpected pkt-line kind %d in capabilities", kind)
		}
		key, value, _ := bytes.Cut(line, []byte{'='})
		switch string(key) {
		case "ls-refs":
			lsRefs = true
		case "object-format":
			ad.objectFormat = string(value)
		}
	}
	if !lsRefs {
		return ad, malformed("a protocol v2 server without ls-refs")
	}
	return ad, nil
}

// lsRefsRequest is the v2 ls-refs command for what Refs holds: HEAD with
// its target, branches, tags peeled.
func lsRefsRequest(ad advertisement) string {
	var b strings.Builder
	b.WriteString(pktLine("command=ls-refs\n"))
	if ad.objectFormat != "" {
		b.WriteString(pktLine("object-format=" + ad.objectFormat + "\n"))
	}
	b.WriteString("0001")
	for _, arg := range []string{"peel", "symrefs", "ref-prefix HEAD", "ref-prefix refs/heads/", "ref-prefix refs/tags/"} {
		b.WriteString(pktLine(arg + "\n"))
	}
	b.WriteString("0000")
	return b.String()
}

// readLsRefs reads a v2 ls-refs answer: "oid name[ symref-target:X][
// peeled:Y]" lines, then a flush.
func readLsRefs(r io.Reader, budget int64, c *refCollector) error {
	pr := &pktReader{r: r, budget: budget}
	for {
		kind, line, err := pr.next()
		if err != nil {
			return readFailed(err)
		}
		if kind == pktFlush {
			return nil
		}
		if kind != pktData {
			return malformed("unexpected pkt-line kind %d in ls-refs", kind)
		}
		if bytes.HasPrefix(line, []byte("ERR ")) {
			return &listError{say: "the remote answered with an error", detail: fmt.Sprintf("%.200q", line)}
		}
		fields := bytes.Split(line, []byte{' '})
		if len(fields) < 2 || len(fields[1]) == 0 || bytes.IndexByte(line, 0) >= 0 {
			return malformed("malformed ls-refs line %.80q", line)
		}
		sha, name := fields[0], string(fields[1])
		if string(sha) == "unborn" {
			continue // asked for nothing unborn; an empty repository's HEAD, as ls-remote shows it: not at all
		}
		if !validSHA(sha) {
			return malformed("malformed ls-refs line %.80q", line)
		}
		c.ref(name, string(sha))
		for _, attr := range fields[2:] {
			if v, ok := bytes.CutPrefix(attr, []byte("symref-target:")); ok && name == "HEAD" {
				c.head(string(v))
			}
			if v, ok := bytes.CutPrefix(attr, []byte("peeled:")); ok {
				if !validSHA(v) {
					return malformed("malformed peeled object in %.80q", line)
				}
				c.ref(name+"^{}", string(v))
			}
		}
	}
}
