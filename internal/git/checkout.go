package git

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A files-only checkout from the object cache is written here, from the
// cache's packs, without a git process (each costs milliseconds of CPU
// on a busy worker): the commit's tree, its files with git's modes
// (umask applied, as git's checkout does), symbolic links, and an empty
// directory for each submodule. What git would write differently is left
// to git (errNotPlain): a tree with a .gitattributes (filters, line
// endings), a name git refuses, a mode it does not know. The build's .git
// has no index: git is not what reads a files-only checkout.

// errNotPlain is a tree that git checks out itself.
var errNotPlain = errors.New("the tree needs git's own checkout")

// objectStore reads the objects of a repository's packs (version 2
// indexes, mapped), deltas resolved.
type objectStore struct {
	packs []*packFile
	zr    io.ReadCloser // one inflater, reset per object
	bases map[baseKey]object
	kept  int // bytes in bases
}

type packFile struct {
	idx  []byte
	pack *os.File
}

type baseKey struct {
	p   *packFile
	off int64
}

type object struct {
	typ  int
	body []byte
}

// Object types in a pack besides objCommit and objTag (gitformat-pack(5)).
const (
	objTree     = 2
	objBlob     = 3
	objOfsDelta = 6
	objRefDelta = 7
)

// maxDeltaChain bounds a delta chain (git writes at most 50 by default).
const maxDeltaChain = 4096

// maxBases bounds the bytes of resolved objects kept as delta bases.
const maxBases = 64 << 20

// openObjects opens the packs of the repository whose git directory is
// gitDir.
func openObjects(gitDir string) (*objectStore, error) {
	idxs, err := filepath.Glob(filepath.Join(gitDir, "objects", "pack", "pack-*.idx"))
	if err != nil {
		return nil, err
	}
	s := &objectStore{bases: map[baseKey]object{}}
	for _, name := range idxs {
		p, err := openPack(name)
		if err != nil {
			s.close()
			return nil, err
		}
		s.packs = append(s.packs, p)
	}
	return s, nil
}

func openPack(idxName string) (*packFile, error) {
	f, err := os.Open(idxName)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const hdr = 8 + 256*4
	if info.Size() < hdr+40 {
		return nil, errNotHere
	}
	idx, err := unix.Mmap(int(f.Fd()), 0, int(info.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(idx[:8], []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2}) {
		unix.Munmap(idx)
		return nil, errNotHere
	}
	pack, err := os.Open(strings.TrimSuffix(idxName, ".idx") + ".pack")
	if err != nil {
		unix.Munmap(idx)
		return nil, err
	}
	return &packFile{idx: idx, pack: pack}, nil
}

func (s *objectStore) close() {
	for _, p := range s.packs {
		unix.Munmap(p.idx)
		p.pack.Close()
	}
	if s.zr != nil {
		s.zr.Close()
	}
}

// find is the pack holding id and the object's offset in it.
func (s *objectStore) find(id []byte) (*packFile, int64, bool) {
	const hdr, n = 8 + 256*4, 20
	for _, p := range s.packs {
		fan := func(b int) int { return int(binary.BigEndian.Uint32(p.idx[8+4*b:])) }
		total := fan(255)
		lo, hi := 0, fan(int(id[0]))
		if id[0] > 0 {
			lo = fan(int(id[0]) - 1)
		}
		small := hdr + total*n + total*4
		if hi > total || len(p.idx) < small+total*4 {
			continue
		}
		for lo < hi {
			mid := (lo + hi) / 2
			switch c := bytes.Compare(p.idx[hdr+mid*n:hdr+(mid+1)*n], id); {
			case c == 0:
				off := int64(binary.BigEndian.Uint32(p.idx[small+mid*4:]))
				if off&0x80000000 != 0 {
					at := small + total*4 + int(off&0x7fffffff)*8
					if at+8 > len(p.idx) {
						return nil, 0, false
					}
					off = int64(binary.BigEndian.Uint64(p.idx[at:]) & (1<<63 - 1))
				}
				return p, off, true
			case c < 0:
				lo = mid + 1
			default:
				hi = mid
			}
		}
	}
	return nil, 0, false
}

// read is object id, whole.
func (s *objectStore) read(id []byte) (object, error) {
	p, off, ok := s.find(id)
	if !ok {
		return object{}, fmt.Errorf("object %x: %w", id, errNotHere)
	}
	return s.readAt(p, off, 0)
}

// readAt is the object at off in pack p, its deltas applied.
func (s *objectStore) readAt(p *packFile, off int64, depth int) (object, error) {
	if o, ok := s.bases[baseKey{p, off}]; ok {
		return o, nil
	}
	if depth > maxDeltaChain {
		return object{}, errors.New("delta chain too long")
	}
	br := bufio.NewReaderSize(io.NewSectionReader(p.pack, off, 1<<62), 512)
	c, err := br.ReadByte()
	if err != nil {
		return object{}, err
	}
	typ, size, shift := int(c>>4)&7, int64(c&15), 4
	for c&0x80 != 0 {
		if c, err = br.ReadByte(); err != nil || shift > 56 {
			return object{}, errNotHere
		}
		size |= int64(c&0x7f) << shift
		shift += 7
	}
	var base object
	switch typ {
	case objCommit, objTree, objBlob, objTag:
	case objOfsDelta:
		c, err := br.ReadByte()
		if err != nil {
			return object{}, err
		}
		rel := int64(c & 0x7f)
		for c&0x80 != 0 {
			if c, err = br.ReadByte(); err != nil || rel > 1<<48 {
				return object{}, errNotHere
			}
			rel = (rel+1)<<7 | int64(c&0x7f)
		}
		if rel <= 0 || rel > off {
			return object{}, errNotHere
		}
		if base, err = s.readAt(p, off-rel, depth+1); err != nil {
			return object{}, err
		}
	case objRefDelta:
		id := make([]byte, 20)
		if _, err := io.ReadFull(br, id); err != nil {
			return object{}, err
		}
		bp, boff, ok := s.find(id)
		if !ok {
			return object{}, errNotHere
		}
		if base, err = s.readAt(bp, boff, depth+1); err != nil {
			return object{}, err
		}
	default:
		return object{}, errNotHere
	}
	body, err := s.inflate(br, size)
	if err != nil {
		return object{}, err
	}
	o := object{typ: typ, body: body}
	if typ == objOfsDelta || typ == objRefDelta {
		if o.body, err = applyDelta(base.body, body); err != nil {
			return object{}, err
		}
		o.typ = base.typ
	}
	if o.typ != objBlob && s.kept+len(o.body) <= maxBases {
		s.bases[baseKey{p, off}] = o // trees are the bases read again and again
		s.kept += len(o.body)
	}
	return o, nil
}

func (s *objectStore) inflate(r io.Reader, size int64) ([]byte, error) {
	if size > 1<<31 {
		return nil, errors.New("object too large")
	}
	var err error
	if s.zr == nil {
		s.zr, err = zlib.NewReader(r)
	} else {
		err = s.zr.(zlib.Resetter).Reset(r, nil)
	}
	if err != nil {
		return nil, err
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(s.zr, body); err != nil {
		return nil, err
	}
	return body, nil
}

// applyDelta is gitformat-pack(5)'s delta of base.
func applyDelta(base, delta []byte) ([]byte, error) {
	bad := errors.New("corrupt delta")
	varint := func() (int, bool) {
		n, shift := 0, 0
		for len(delta) > 0 && shift < 63 {
			c := delta[0]
			delta = delta[1:]
			n |= int(c&0x7f) << shift
			if c&0x80 == 0 {
				return n, true
			}
			shift += 7
		}
		return 0, false
	}
	srcSize, ok1 := varint()
	dstSize, ok2 := varint()
	if !ok1 || !ok2 || srcSize != len(base) || dstSize > 1<<31 {
		return nil, bad
	}
	out := make([]byte, 0, dstSize)
	for len(delta) > 0 {
		op := delta[0]
		delta = delta[1:]
		switch {
		case op&0x80 != 0:
			var off, n int
			for i := range 7 {
				if op&(1<<i) == 0 {
					continue
				}
				if len(delta) == 0 {
					return nil, bad
				}
				if i < 4 {
					off |= int(delta[0]) << (8 * i)
				} else {
					n |= int(delta[0]) << (8 * (i - 4))
				}
				delta = delta[1:]
			}
			if n == 0 {
				n = 0x10000
			}
			if off+n > len(base) || len(out)+n > dstSize {
				return nil, bad
			}
			out = append(out, base[off:off+n]...)
		case op != 0:
			if int(op) > len(delta) || len(out)+int(op) > dstSize {
				return nil, bad
			}
			out = append(out, delta[:op]...)
			delta = delta[op:]
		default:
			return nil, bad
		}
	}
	if len(out) != dstSize {
		return nil, bad
	}
	return out, nil
}

// writeCheckout writes the tree of commit sha from the packs of the
// repository at gitDir into dir (where only .git may exist) and returns
// the commit's committer time.
func writeCheckout(gitDir, sha, dir string) (time.Time, error) {
	id, err := hex.DecodeString(sha)
	if err != nil || len(id) != 20 {
		return time.Time{}, errNotPlain
	}
	s, err := openObjects(gitDir)
	if err != nil {
		return time.Time{}, err
	}
	defer s.close()
	commit, err := s.read(id)
	if err != nil {
		return time.Time{}, err
	}
	if commit.typ != objCommit {
		return time.Time{}, fmt.Errorf("%s is not a commit", sha)
	}
	treeHex, ok := bytes.CutPrefix(commit.body, []byte("tree "))
	if !ok || len(treeHex) < 40 {
		return time.Time{}, errNotHere
	}
	tree, err := hex.DecodeString(string(treeHex[:40]))
	if err != nil {
		return time.Time{}, errNotHere
	}
	when, err := committerTime(bufio.NewReader(bytes.NewReader(commit.body)))
	if err != nil {
		return time.Time{}, err
	}
	return when, s.writeTree(tree, dir)
}

// writeTree writes tree id into dir, which exists.
func (s *objectStore) writeTree(id []byte, dir string) error {
	t, err := s.read(id)
	if err != nil {
		return err
	}
	if t.typ != objTree {
		return fmt.Errorf("object %x is not a tree", id)
	}
	for rest := t.body; len(rest) > 0; {
		sp := bytes.IndexByte(rest, ' ')
		nul := bytes.IndexByte(rest, 0)
		if sp < 0 || nul < sp || len(rest) < nul+21 {
			return errNotHere
		}
		mode, name, entry := string(rest[:sp]), string(rest[sp+1:nul]), rest[nul+1:nul+21]
		rest = rest[nul+21:]
		if !plainName(name) {
			return errNotPlain
		}
		p := filepath.Join(dir, name)
		switch mode {
		case "40000":
			if err := os.Mkdir(p, 0o777); err != nil {
				return err // exists: a name twice in the tree
			}
			if err := s.writeTree(entry, p); err != nil {
				return err
			}
		case "100644", "100755":
			blob, err := s.read(entry)
			if err != nil {
				return err
			}
			if blob.typ != objBlob {
				return errNotHere
			}
			perm := os.FileMode(0o666)
			if mode == "100755" {
				perm = 0o777
			}
			if err := writeNew(p, blob.body, perm); err != nil {
				return err
			}
		case "120000":
			target, err := s.read(entry)
			if err != nil {
				return err
			}
			if err := os.Symlink(string(target.body), p); err != nil {
				return err
			}
		case "160000": // a submodule: git leaves an empty directory
			if err := os.Mkdir(p, 0o777); err != nil {
				return err
			}
		default:
			return errNotPlain
		}
	}
	return nil
}

// plainName is a tree entry's name that git checks out as it is: not
// ".", "..", ".git" in any case, a .gitattributes (git would apply it),
// or a name with a slash or a NUL.
func plainName(name string) bool {
	switch strings.ToLower(name) {
	case "", ".", "..", ".git", ".gitattributes":
		return false
	}
	return !strings.ContainsAny(name, "/\x00")
}

// writeNew creates the file p, which must not exist (nor be a link).
func writeNew(p string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
