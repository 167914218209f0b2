package git

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// A clone starts as few processes as it can (each one costs milliseconds
// of CPU on a busy worker), so the commit's time is read from the object
// store the fetch just wrote instead of asking `git log`. Only the two
// shapes a fetch leaves a commit in are read: a loose object, and a whole
// (not deltified) object in a pack with a version 2 index. Anything else
// (a delta, an older index, a missing object) is errNotHere, and the
// caller asks git, which reads everything.

var errNotHere = errors.New("commit not readable from the object store")

// maxCommitHeader bounds what is inflated of a commit: its headers come
// first, and the committer line long before any signature or message.
const maxCommitHeader = 1 << 20

// readCommitTime is the committer time of commit sha in the repository
// whose git directory is gitDir.
func readCommitTime(gitDir, sha string) (time.Time, error) {
	id, err := hex.DecodeString(sha)
	if err != nil || (len(id) != 20 && len(id) != 32) {
		return time.Time{}, errNotHere
	}
	objects := filepath.Join(gitDir, "objects")
	if f, err := os.Open(filepath.Join(objects, sha[:2], sha[2:])); err == nil {
		defer f.Close()
		return looseCommitTime(f)
	}
	idxs, _ := filepath.Glob(filepath.Join(objects, "pack", "pack-*.idx"))
	for _, idx := range idxs {
		off, err := packOffset(idx, id)
		if err != nil {
			continue
		}
		pack, err := os.Open(idx[:len(idx)-len(".idx")] + ".pack")
		if err != nil {
			return time.Time{}, errNotHere
		}
		defer pack.Close()
		return packedCommitTime(pack, off)
	}
	return time.Time{}, errNotHere
}

// looseCommitTime reads a loose object: zlib("commit <size>\x00<body>").
func looseCommitTime(r io.Reader) (time.Time, error) {
	zr, err := zlib.NewReader(r)
	if err != nil {
		return time.Time{}, errNotHere
	}
	defer zr.Close()
	br := bufio.NewReader(io.LimitReader(zr, maxCommitHeader))
	head, err := br.ReadString(0)
	if err != nil || len(head) < len("commit ") || head[:len("commit ")] != "commit " {
		return time.Time{}, errNotHere
	}
	return committerTime(br)
}

// packOffset finds id in a version 2 pack index and returns the offset of
// its object in the pack.
func packOffset(idxFile string, id []byte) (int64, error) {
	f, err := os.Open(idxFile)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	// Header: magic, version 2, then 256 cumulative counts by first byte.
	var hdr [8 + 256*4]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return 0, errNotHere
	}
	if !bytes.Equal(hdr[:8], []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2}) {
		return 0, errNotHere
	}
	fanout := func(b int) uint32 { return binary.BigEndian.Uint32(hdr[8+4*b:]) }
	total := int64(fanout(255))
	lo, hi := int64(0), int64(fanout(int(id[0])))
	if id[0] > 0 {
		lo = int64(fanout(int(id[0]) - 1))
	}
	n, names := int64(len(id)), int64(len(hdr))
	name := make([]byte, n)
	for lo < hi { // binary search of the sorted names with this first byte
		mid := (lo + hi) / 2
		if _, err := f.ReadAt(name, names+mid*n); err != nil {
			return 0, errNotHere
		}
		switch c := bytes.Compare(name, id); {
		case c == 0:
			// After the names: a CRC32 per object, then 4-byte offsets;
			// one with the high bit set indexes the 8-byte offsets after.
			offsets := names + total*n + total*4
			var b [8]byte
			if _, err := f.ReadAt(b[:4], offsets+mid*4); err != nil {
				return 0, errNotHere
			}
			off := binary.BigEndian.Uint32(b[:4])
			if off&0x80000000 == 0 {
				return int64(off), nil
			}
			if _, err := f.ReadAt(b[:], offsets+total*4+int64(off&0x7fffffff)*8); err != nil {
				return 0, errNotHere
			}
			return int64(binary.BigEndian.Uint64(b[:]) & (1<<63 - 1)), nil
		case c < 0:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return 0, errNotHere
}

// packedCommitTime reads the object at off in a pack, which must be a
// whole commit: a type-and-size header, then the zlib stream.
func packedCommitTime(pack io.ReaderAt, off int64) (time.Time, error) {
	br := bufio.NewReader(io.NewSectionReader(pack, off, 1<<62))
	c, err := br.ReadByte()
	if err != nil || (c>>4)&7 != 1 { // 1: OBJ_COMMIT
		return time.Time{}, errNotHere
	}
	for c&0x80 != 0 { // the rest of the size
		if c, err = br.ReadByte(); err != nil {
			return time.Time{}, errNotHere
		}
	}
	zr, err := zlib.NewReader(br)
	if err != nil {
		return time.Time{}, errNotHere
	}
	defer zr.Close()
	return committerTime(bufio.NewReader(io.LimitReader(zr, maxCommitHeader)))
}

// committerTime finds the committer header of a commit's body and parses
// its time as git does: the digits after the last '>' of the line.
func committerTime(r *bufio.Reader) (time.Time, error) {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil || len(line) <= 1 {
			return time.Time{}, errNotHere // the end of the headers, or of what was read
		}
		rest, ok := bytes.CutPrefix(line, []byte("committer "))
		if !ok {
			continue
		}
		gt := bytes.LastIndexByte(rest, '>')
		if gt < 0 {
			return time.Time{}, errNotHere
		}
		fields := bytes.Fields(rest[gt+1:])
		if len(fields) == 0 {
			return time.Time{}, errNotHere
		}
		sec, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil || sec < 0 {
			return time.Time{}, errNotHere
		}
		return time.Unix(sec, 0).UTC(), nil
	}
}
