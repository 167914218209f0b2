package git

import (
	"errors"
	"fmt"
	"io"
)

// pkt-line framing (gitprotocol-common(5)): four hex digits of length
// (itself included), then the payload; 0000 is a flush, 0001 a delimiter,
// 0002 a response end. A remote's ref advertisement arrives in it.
const (
	pktData = iota
	pktFlush
	pktDelim
	pktEnd
)

// maxPktData is the largest payload a pkt-line may carry (65520 less the
// length's four bytes).
const maxPktData = 65516

// errTooManyRefs is a remote whose advertisement is larger than
// pktReader's budget: a hostile or broken server, or a repository with
// far more refs than any package's.
var errTooManyRefs = errors.New("the remote's ref advertisement is larger than the listing limit")

// formatError is a pkt-line length that is none.
type formatError struct{ length [4]byte }

func (e *formatError) Error() string { return fmt.Sprintf("malformed pkt-line length %q", e.length[:]) }

// pktReader reads pkt-lines from r, at most budget bytes in all, into one
// reused buffer: a listing's memory is its budget at most, whatever a
// server sends.
type pktReader struct {
	r      io.Reader
	budget int64
	buf    [maxPktData]byte
}

// next returns the next pkt-line's kind and payload (valid until the next
// call), without its trailing newline.
func (p *pktReader) next() (kind int, line []byte, err error) {
	var hdr [4]byte
	if err := p.read(hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	n := 0
	for _, c := range hdr {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, nil, &formatError{hdr}
		}
		n = n<<4 | int(v)
	}
	switch {
	case n == 0:
		return pktFlush, nil, nil
	case n == 1:
		return pktDelim, nil, nil
	case n == 2:
		return pktEnd, nil, nil
	case n < 4 || n-4 > maxPktData:
		return 0, nil, &formatError{hdr}
	}
	line = p.buf[:n-4]
	if err := p.read(line); err != nil {
		return 0, nil, err
	}
	if len(line) > 0 && line[len(line)-1] == '\n' {
		line = line[:len(line)-1]
	}
	return pktData, line, nil
}

func (p *pktReader) read(b []byte) error {
	p.budget -= int64(len(b))
	if p.budget < 0 {
		return errTooManyRefs
	}
	_, err := io.ReadFull(p.r, b)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// pktLine frames s as one data pkt-line.
func pktLine(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }
