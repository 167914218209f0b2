package git

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
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
	pack, off, err := findPacked(gitDir, id)
	if err != nil {
		return time.Time{}, err
	}
	defer pack.Close()
	return packedCommitTime(pack, off)
}

// findPacked opens the pack of the repository whose git directory is
// gitDir that holds object id, and says where in it the object starts.
func findPacked(gitDir string, id []byte) (*os.File, int64, error) {
	idxs, _ := filepath.Glob(filepath.Join(gitDir, "objects", "pack", "pack-*.idx"))
	for _, idx := range idxs {
		off, err := packOffset(idx, id)
		if err != nil {
			continue
		}
		pack, err := os.Open(idx[:len(idx)-len(".idx")] + ".pack")
		if err != nil {
			return nil, 0, errNotHere
		}
		return pack, off, nil
	}
	return nil, 0, errNotHere
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

// Object types in a pack (gitformat-pack(5)).
const (
	objCommit = 1
	objTag    = 4
)

// maxObject bounds a commit or tag read whole (a signed one is a few
// kilobytes).
const maxObject = 16 << 20

// packedObject is the object at off in a pack, which must be whole (not
// a delta): its type and its body.
func packedObject(pack io.ReaderAt, off int64) (int, []byte, error) {
	br := bufio.NewReader(io.NewSectionReader(pack, off, 1<<62))
	c, err := br.ReadByte()
	if err != nil {
		return 0, nil, errNotHere
	}
	typ, size, shift := int(c>>4)&7, int64(c&15), 4
	for c&0x80 != 0 {
		if c, err = br.ReadByte(); err != nil || shift > 56 {
			return 0, nil, errNotHere
		}
		size |= int64(c&0x7f) << shift
		shift += 7
	}
	if typ < objCommit || typ > objTag || size > maxObject {
		return 0, nil, errNotHere // a delta, or too big to be a commit
	}
	zr, err := zlib.NewReader(br)
	if err != nil {
		return 0, nil, errNotHere
	}
	defer zr.Close()
	body := make([]byte, size)
	if _, err := io.ReadFull(zr, body); err != nil {
		return 0, nil, errNotHere
	}
	return typ, body, nil
}

// packNames lists the object names of a version 2 pack index, with each
// one's offset in its pack.
func packNames(idxFile string) (names [][]byte, offsets []int64, err error) {
	b, err := os.ReadFile(idxFile)
	if err != nil {
		return nil, nil, err
	}
	const hdr = 8 + 256*4
	if len(b) < hdr || !bytes.Equal(b[:8], []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2}) {
		return nil, nil, errNotHere
	}
	total := int(binary.BigEndian.Uint32(b[hdr-4:]))
	const n = 20 // SHA-1: a SHA-256 repository is read by git (errNotHere)
	small := hdr + total*n + total*4
	if len(b) < small+total*4+2*n {
		return nil, nil, errNotHere
	}
	for i := range total {
		names = append(names, b[hdr+i*n:hdr+(i+1)*n])
		off := int64(binary.BigEndian.Uint32(b[small+i*4:]))
		if off&0x80000000 != 0 {
			at := small + total*4 + int(off&0x7fffffff)*8
			if at+8 > len(b) {
				return nil, nil, errNotHere
			}
			off = int64(binary.BigEndian.Uint64(b[at:]) & (1<<63 - 1))
		}
		offsets = append(offsets, off)
	}
	return names, offsets, nil
}

// commitParents reads the parents of a commit's body.
func commitParents(body []byte) [][]byte {
	var parents [][]byte
	for line := range bytes.Lines(body) {
		rest, ok := bytes.CutPrefix(line, []byte("parent "))
		if !ok {
			if bytes.HasPrefix(line, []byte("tree ")) {
				continue
			}
			break // the parents follow the tree, before any other header
		}
		id, err := hex.DecodeString(string(bytes.TrimSpace(rest)))
		if err == nil && len(id) == 20 {
			parents = append(parents, id)
		}
	}
	return parents
}

// packedObj is an object to write into a pack.
type packedObj struct {
	id   []byte
	typ  int
	body []byte
}

// writePack writes objs, whole, as a pack with its version 2 index into
// the pack directory dir, with a file of each extension in marks beside
// it, and returns its path less the extension. The index comes last, by
// a rename, as git writes it: git uses a pack once its index is there.
func writePack(dir string, objs []packedObj, marks ...string) (string, error) {
	slices.SortFunc(objs, func(a, b packedObj) int { return bytes.Compare(a.id, b.id) })
	var pack bytes.Buffer
	pack.Write([]byte{'P', 'A', 'C', 'K', 0, 0, 0, 2})
	binary.Write(&pack, binary.BigEndian, uint32(len(objs)))
	zw := zlib.NewWriter(nil)
	offsets := make([]uint32, len(objs))
	crcs := make([]uint32, len(objs))
	for i, o := range objs {
		offsets[i] = uint32(pack.Len())
		start := pack.Len()
		size := len(o.body)
		c := byte(o.typ<<4) | byte(size&15)
		for size >>= 4; size > 0; size >>= 7 {
			pack.WriteByte(c | 0x80)
			c = byte(size & 0x7f)
		}
		pack.WriteByte(c)
		zw.Reset(&pack) // one writer: a new one allocates its state anew
		zw.Write(o.body)
		if err := zw.Close(); err != nil {
			return "", err
		}
		crcs[i] = crc32.ChecksumIEEE(pack.Bytes()[start:])
	}
	if pack.Len() >= 1<<31 {
		return "", errors.New("pack too large")
	}
	sum := sha1.Sum(pack.Bytes())
	pack.Write(sum[:])
	var idx bytes.Buffer
	idx.Write([]byte{0xff, 't', 'O', 'c', 0, 0, 0, 2})
	for b := range 256 {
		n := sort.Search(len(objs), func(i int) bool { return int(objs[i].id[0]) > b })
		binary.Write(&idx, binary.BigEndian, uint32(n))
	}
	for _, o := range objs {
		idx.Write(o.id)
	}
	binary.Write(&idx, binary.BigEndian, crcs)
	binary.Write(&idx, binary.BigEndian, offsets)
	idx.Write(sum[:])
	isum := sha1.Sum(idx.Bytes())
	idx.Write(isum[:])
	base := filepath.Join(dir, "pack-"+hex.EncodeToString(sum[:]))
	for _, ext := range marks {
		if err := os.WriteFile(base+ext, nil, 0o444); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(base+".pack", pack.Bytes(), 0o444); err != nil {
		return "", err
	}
	if err := os.WriteFile(base+".idx.tmp", idx.Bytes(), 0o444); err != nil {
		return "", err
	}
	return base, os.Rename(base+".idx.tmp", base+".idx")
}

// readObject reads the object id, whole, from a pack of the repository
// whose git directory is gitDir.
func readObject(gitDir string, id []byte) (int, []byte, error) {
	pack, off, err := findPacked(gitDir, id)
	if err != nil {
		return 0, nil, err
	}
	defer pack.Close()
	return packedObject(pack, off)
}
