package git

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A checkout is a full clone to the tools that version a package from
// git: it has every commit of its commit's history and every tag of the
// remote. Only the commit's own files come with it; the history comes as
// commits alone (a partial fetch, --filter=tree:0), which is all that
// `git describe` reads.
//
// The history is kept across a builder's builds, in a history repository
// under Git.BuilderDir, and its packs are copied, never linked, into each
// checkout: the build may write to its checkout, and must not reach the
// next build's history.
//
// A kept history is copied into the checkout before its fetch, which then
// brings the commit's files and the remote's tags (pruned) at once: a
// build starts no process more than a files-only clone but `git
// describe`. That fetch offers the server no commit as had (negotiation
// noop), since the server would then leave out every file a had commit
// has, and the history has commits alone; only a tag new since the last
// build comes over (with its commit's files, at depth). When the new
// commits' parents are in the history (a push of up to Depth commits,
// new tags on known commits), the checkout is whole: the new commits and
// tags go into the history, as a pack written here from the fetch's
// objects before the build runs (completeFrom). Otherwise (a force push,
// a longer push) the history's own fetch brings what is missing.
//
// A builder's first build on a worker fetches the history beside the
// files, into a new history repository. A server that does not filter
// (uploadpack.allowFilter unset) sends trees and files too, once, into
// the history repository.

// history is the describe-able history of one commit, fetched into a
// history repository.
type history struct {
	dir      string // the history repository (bare)
	describe string // `git describe` of the commit there; "" when no tag
	unlock   func()
	// shaIsNew says that completeFrom brought the commit into the
	// history: no tag it had before can name it.
	shaIsNew bool
}

// maxHistoryPacks is how many packs a history repository may hold before
// a clone repacks it: each fetch adds one, and each build copies them all.
const maxHistoryPacks = 16

// fetchHistory brings the history of sha and the remote's tags into the
// history repository at dir (made when missing), locked until unlock.
// A kept one that git cannot fetch into (a crash mid-write) is made anew
// once.
func (c *Client) fetchHistory(ctx context.Context, dir, remote, sha string) (*history, error) {
	_, statErr := os.Stat(filepath.Join(dir, "HEAD"))
	h, err := c.fetchHistoryOnce(ctx, dir, remote, sha)
	if err != nil && statErr == nil && ctx.Err() == nil {
		if rmErr := os.RemoveAll(dir); rmErr == nil {
			h, err = c.fetchHistoryOnce(ctx, dir, remote, sha)
		}
	}
	return h, err
}

func (c *Client) fetchHistoryOnce(ctx context.Context, dir, remote, sha string) (*history, error) {
	if err := os.MkdirAll(filepath.Join(dir, "objects", "pack"), 0o755); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	h := &history{dir: dir, unlock: unlock}
	if err := c.fetchLocked(ctx, dir, remote, sha); err != nil {
		unlock()
		return nil, fmt.Errorf("history: %w", err)
	}
	if hasTags(dir) {
		// Fails only when no tag is in sha's history: no describe.
		if d, err := c.run(ctx, dir, nil, describe(sha)...); err == nil {
			h.describe = strings.TrimSpace(string(d))
		}
	}
	return h, nil
}

// fetchLocked fetches the history of sha and the remote's tags into the
// history repository at dir, whose lock the caller holds.
func (c *Client) fetchLocked(ctx context.Context, dir, remote, sha string) error {
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		if err := layoutRepo(dir, bareConfig, 0o755); err != nil {
			return err
		}
	}
	// The commit under a ref of its own: the next build's fetch offers it
	// to the server as had, and tags that moved or went are pruned.
	// Its own way out: the outbound policy holds for this fetch as for the
	// checkout's, which runs beside it.
	w, err := c.outbound(remote)
	if err != nil {
		return err
	}
	defer w.close()
	if _, err := c.run(ctx, dir, w, "fetch", "--quiet", "--no-tags", "--prune", "--filter=tree:0", "--",
		remote, "+refs/tags/*:refs/tags/*", "+"+sha+":refs/heads/main"); err != nil {
		return err
	}
	return c.repackHistory(ctx, dir)
}

// repackHistory repacks the history repository at dir once it holds too
// many packs (maxHistoryPacks).
func (c *Client) repackHistory(ctx context.Context, dir string) error {
	if packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack")); len(packs) > maxHistoryPacks {
		if _, err := c.run(ctx, dir, nil, "repack", "-adq"); err != nil {
			return err
		}
	}
	return nil
}

// lockKept locks the history repository at dir and returns it when it
// holds a history already (an earlier build's); nil, unlocked, when not.
func lockKept(ctx context.Context, dir string) (*history, error) {
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		return nil, nil
	}
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		unlock() // removed while this build waited: a broken one
		return nil, nil
	}
	return &history{dir: dir, unlock: unlock}, nil
}

// completeFromKept completes the checkout at dir from h after the
// checkout's fetch (completeFrom; past the fetch's depth, the history's
// own fetch) and describes sha there.
func (c *Client) completeFromKept(ctx context.Context, h *history, dir, remote, sha string) (string, error) {
	gitDir := filepath.Join(dir, ".git")
	complete, err := h.completeFrom(gitDir, sha)
	if err == nil && !complete {
		if err = c.fetchLocked(ctx, h.dir, remote, sha); err == nil {
			err = h.copyInto(gitDir)
		}
	}
	if err == nil {
		err = c.repackHistory(ctx, h.dir)
	}
	if err != nil {
		if ctx.Err() == nil {
			h.discard()
		}
		return "", fmt.Errorf("history: %w", err)
	}
	tags, err := readTags(gitDir)
	if err != nil {
		return "", fmt.Errorf("history: %w", err)
	}
	if d, ok := h.describeChild(gitDir, sha, tags); ok {
		return d, nil
	}
	d := c.describeIn(ctx, dir, sha)
	h.remember(sha, d, tags)
	return d, nil
}

// The describe of the last build's commit is kept with the history, with
// a digest of the tags it was computed under (describeFile), so that the
// next build's commit, when its one parent is that commit and the tags
// are the same, is described without a git process: git's describe walks
// from the commit by date, and with one parent and no tag of its own the
// walk is its parent's with one commit more, to every candidate tag.
const describeFile = "pkgfleet-describe"

func tagsDigest(tags []tagRef) string {
	s := sha1.New()
	for _, t := range tags {
		fmt.Fprintf(s, "%s %s\n", t.sha, t.ref)
	}
	return hex.EncodeToString(s.Sum(nil))
}

// remember keeps d, the describe of sha under tags, for the next build.
func (h *history) remember(sha, d string, tags []tagRef) {
	if h.dir == "" {
		return
	}
	// At worst the next build runs git describe.
	_ = writeFileAtomic(filepath.Join(h.dir, describeFile), sha+" "+tagsDigest(tags)+" "+d+"\n")
}

// describeChild describes sha, the commit checked out in the repository
// whose git directory is gitDir, from the kept describe of its parent
// (see describeFile); false when it cannot.
func (h *history) describeChild(gitDir, sha string, tags []tagRef) (string, bool) {
	b, err := os.ReadFile(filepath.Join(h.dir, describeFile))
	if err != nil || !h.shaIsNew {
		return "", false
	}
	fields := strings.SplitN(strings.TrimSuffix(string(b), "\n"), " ", 3)
	if len(fields) != 3 || fields[1] != tagsDigest(tags) {
		return "", false
	}
	parent, parentDescribe := fields[0], fields[2]
	id, err := hex.DecodeString(sha)
	if err != nil {
		return "", false
	}
	typ, body, err := readObject(gitDir, id)
	if err != nil || typ != objCommit {
		return "", false
	}
	parents := commitParents(body)
	if len(parents) != 1 || hex.EncodeToString(parents[0]) != parent {
		return "", false
	}
	var d string
	if parentDescribe != "" { // else no tag is in the parent's history, nor in sha's
		rest, _, ok := cutLast(parentDescribe, "-g")
		if !ok {
			return "", false
		}
		name, depth, ok := cutLast(rest, "-")
		n, err := strconv.Atoi(depth)
		if !ok || err != nil || n < 0 {
			return "", false
		}
		abbrev, ok := uniqueAbbrev(gitDir, id)
		if !ok {
			return "", false
		}
		d = fmt.Sprintf("%s-%d-g%s", name, n+1, sha[:abbrev])
	}
	h.remember(sha, d, tags)
	return d, true
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+len(sep):], true
}

// uniqueAbbrev is how many hex digits of id git's describe prints in the
// repository whose git directory is gitDir (core.abbrev unset): 7, or
// more for a repository of over 2^14 objects (half the bit length of
// their count, as counted from the packs' indexes), and then as many as
// make it unique among the objects.
func uniqueAbbrev(gitDir string, id []byte) (int, bool) {
	idxs, _ := filepath.Glob(filepath.Join(gitDir, "objects", "pack", "pack-*.idx"))
	count, common := 0, 0
	for _, idx := range idxs {
		names, _, err := packNames(idx)
		if err != nil {
			return 0, false
		}
		count += len(names)
		for _, n := range names {
			if bytes.Equal(n, id) {
				continue
			}
			c := 0 // hex digits in common
			for c < 2*len(id) && nibble(n, c) == nibble(id, c) {
				c++
			}
			common = max(common, c)
		}
	}
	if loose, _ := filepath.Glob(filepath.Join(gitDir, "objects", "??")); len(loose) > 0 {
		return 0, false // loose objects: git's count, not this one
	}
	abbrev := max(7, (bits.Len(uint(count))+1)/2)
	return max(abbrev, common+1), common+1 <= 2*len(id)
}

func nibble(b []byte, i int) byte {
	if i%2 == 0 {
		return b[i/2] >> 4
	}
	return b[i/2] & 15
}

// discard removes a kept history that a build could not use, so that the
// next build makes it anew (fetchHistory).
func (h *history) discard() {
	os.RemoveAll(h.dir)
}

// keptFetchArgs is the checkout's fetch when a kept history was copied
// into it first (copyInto): the files of sha as before, and the remote's
// tags, pruned, in the same fetch. The checkout's tags then are the
// remote's, and only a tag new since the last build comes over the wire
// (with its commit's files, at depth). No commit is offered as had
// (negotiation noop): the server would leave out every file a had commit
// has, and the kept history has commits alone. A git that does not know
// the noop algorithm (the worker image's 2.39 does; git's own lazy
// fetches use it) offers commits anyway, and then the checkout fails for
// the files it lacks: a failure, never a wrong build.
func keptFetchArgs(depth int, remote, sha string) []string {
	return []string{"-c", "fetch.negotiationAlgorithm=noop", "fetch", "--quiet", "--no-tags", "--prune",
		"--depth", strconv.Itoa(depth), "--", remote, sha, "+refs/tags/*:refs/tags/*"}
}

// completeFrom makes whole the checkout whose git directory is gitDir,
// into which h was copied before its fetch (keptFetchArgs), and brings
// what that fetch added of the history (commits and tags, never files)
// into h. It reports false, with nothing changed, when the history the
// checkout lacks is not h's: a commit whose parents h has not (a push of
// several commits, a force push, a tag on a new branch).
//
// The new commits and tags go into h from this fetch's own pack, before
// the build runs and as a pack of h's own (written here, not copied), so
// nothing a build does to its checkout reaches h.
func (h *history) completeFrom(gitDir, sha string) (bool, error) {
	tags, err := readTags(gitDir)
	if err != nil {
		return false, err
	}
	var todo [][]byte
	for _, hexID := range append([]string{sha}, tagSHAs(tags)...) {
		if id, err := hex.DecodeString(hexID); err == nil {
			todo = append(todo, id)
		}
	}
	// Every object h has, as seen: read once from its packs' indexes.
	seen := map[string]bool{}
	idxs, _ := filepath.Glob(filepath.Join(h.dir, "objects", "pack", "pack-*.idx"))
	for _, idx := range idxs {
		names, _, err := packNames(idx)
		if err != nil {
			return false, nil
		}
		for _, n := range names {
			seen[string(n)] = true
		}
	}
	if len(todo) == 0 || len(todo[0]) != 20 {
		return false, nil // not a SHA-1 name: git's fetch
	}
	h.shaIsNew = !seen[string(todo[0])]
	var objs []packedObj
	for len(todo) > 0 {
		id := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[string(id)] {
			continue
		}
		seen[string(id)] = true
		typ, body, err := readObject(gitDir, id)
		if err != nil {
			return false, nil // not here (beyond the fetch's depth), or not readable here: git's fetch
		}
		objs = append(objs, packedObj{id, typ, body})
		switch typ {
		case objCommit:
			todo = append(todo, commitParents(body)...)
		case objTag:
			if target, ok := tagTarget(body); ok {
				todo = append(todo, target)
			}
		}
	}
	if len(objs) > 0 {
		if err := h.addObjects(objs); err != nil {
			return false, err
		}
	}
	// The checkout's tags are the remote's now (its fetch pruned them);
	// h's are written only when they differ, each file costing as much
	// here as a millisecond of a busy worker.
	if old, err := readTags(h.dir); err != nil || !slices.Equal(old, tags) {
		var b strings.Builder
		for _, t := range tags {
			fmt.Fprintf(&b, "%s %s\n", t.sha, t.ref)
		}
		if err := writeFileAtomic(filepath.Join(h.dir, "packed-refs"), b.String()); err != nil {
			return false, err
		}
		if err := os.RemoveAll(filepath.Join(h.dir, "refs", "tags")); err != nil {
			return false, err
		}
		if err := os.MkdirAll(filepath.Join(h.dir, "refs", "tags"), 0o755); err != nil {
			return false, err
		}
	}
	if err := writeFileAtomic(filepath.Join(h.dir, "refs", "heads", "main"), sha+"\n"); err != nil {
		return false, err
	}
	if err := os.Remove(filepath.Join(gitDir, "shallow")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// maxOwnObjects is how many objects the pack h writes of its own may
// hold before the next build starts another: each build adds a few (its
// commit, a new tag) and rewrites the pack, so that every build's checkout
// copies one pack of them, not one a build. maxHistoryPacks then bounds
// how many such packs build up.
const maxOwnObjects = 512

// addObjects writes objs, commits and tags from a checkout's fetch, into
// h's own pack (a .own file marks it), merged with the one there unless
// it is full.
func (h *history) addObjects(objs []packedObj) error {
	dir := filepath.Join(h.dir, "objects", "pack")
	owns, _ := filepath.Glob(filepath.Join(dir, "pack-*.own"))
	old := ""
	for _, o := range owns {
		base := strings.TrimSuffix(o, ".own")
		names, offsets, err := packNames(base + ".idx")
		if err != nil {
			os.Remove(o) // repacked by git: an ordinary pack now, or none
			continue
		}
		if old != "" || len(names)+len(objs) > maxOwnObjects {
			continue
		}
		pack, err := os.Open(base + ".pack")
		if err != nil {
			return err
		}
		merged := objs
		for i, id := range names {
			typ, body, err := packedObject(pack, offsets[i])
			if err != nil {
				merged = nil
				break
			}
			merged = append(merged, packedObj{id, typ, body})
		}
		pack.Close()
		if merged != nil {
			objs, old = merged, base
		}
	}
	// .promisor: the trees of its commits are the remote's, as in the
	// packs git fetched with --filter=tree:0.
	if _, err := writePack(dir, objs, ".promisor", ".own"); err != nil {
		return err
	}
	if old != "" {
		for _, ext := range []string{".idx", ".pack", ".promisor", ".own"} {
			if err := os.Remove(old + ext); err != nil {
				return err
			}
		}
	}
	return nil
}

func tagSHAs(tags []tagRef) []string {
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = t.sha
	}
	return out
}

// tagTarget is the object an annotated tag's body names.
func tagTarget(body []byte) ([]byte, bool) {
	line, _, _ := bytes.Cut(body, []byte("\n"))
	rest, ok := bytes.CutPrefix(line, []byte("object "))
	if !ok {
		return nil, false
	}
	id, err := hex.DecodeString(string(rest))
	return id, err == nil && len(id) == 20
}

func writeFileAtomic(name, data string) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// copyInto gives the checkout whose git directory is gitDir the history's
// objects and tags: before the checkout's fetch (a kept history), or
// after it, when it was fetched shallow (its commit without parents);
// with the history it is whole. Each pack goes before its index, which
// comes by a rename: git may be reading the checkout meanwhile, and uses
// a pack once its index is there.
func (h *history) copyInto(gitDir string) error {
	packs, err := filepath.Glob(filepath.Join(h.dir, "objects", "pack", "pack-*.pack"))
	if err != nil {
		return err
	}
	for _, p := range packs {
		// .promisor, .keep, .own stay: the checkout fetches nothing later.
		// A pack's name is its content's hash: one of the same name is
		// the same (a history of one commit, fetched with its files).
		idx := strings.TrimSuffix(p, ".pack") + ".idx"
		if _, err := os.Stat(idx); err != nil {
			continue // not a pack git uses (a write that a crash cut short)
		}
		to := filepath.Join(gitDir, "objects", "pack", filepath.Base(p))
		if err := copyFile(p, to); errors.Is(err, os.ErrExist) {
			continue
		} else if err != nil {
			return err
		}
		toIdx := strings.TrimSuffix(to, ".pack") + ".idx"
		if err := copyFile(idx, toIdx+".tmp"); err != nil {
			return err
		}
		if err := os.Rename(toIdx+".tmp", toIdx); err != nil {
			return err
		}
	}
	tags, err := readTags(h.dir)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, t := range tags {
		fmt.Fprintf(&b, "%s %s\n", t.sha, t.ref)
	}
	// A rename: after the checkout's fetch, git reads it beside this.
	if err := writeFileAtomic(filepath.Join(gitDir, "packed-refs"), b.String()); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(gitDir, "shallow")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

type tagRef struct{ ref, sha string }

// readTags lists the tags of the repository whose git directory is
// gitDir, loose and packed (a loose one wins), sorted by ref.
func readTags(gitDir string) ([]tagRef, error) {
	refs := map[string]string{}
	if f, err := os.Open(filepath.Join(gitDir, "packed-refs")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			sha, ref, ok := strings.Cut(sc.Text(), " ")
			if ok && strings.HasPrefix(ref, "refs/tags/") {
				refs[ref] = sha
			}
		}
		f.Close()
	}
	root := filepath.Join(gitDir, "refs", "tags")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		refs["refs/tags/"+filepath.ToSlash(rel)] = string(bytes.TrimSpace(b))
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	out := make([]tagRef, 0, len(refs))
	for ref, sha := range refs {
		out = append(out, tagRef{ref, sha})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ref < out[j].ref })
	return out, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// lockDir takes an exclusive lock on dir (two builds of one builder on
// one worker share its history repository), waiting for it as long as ctx
// allows.
func lockDir(ctx context.Context, dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	return flock(ctx, f, unix.LOCK_EX)
}

// flock takes a lock of kind how (unix.LOCK_SH or LOCK_EX) on f, waiting
// for it as long as ctx allows; the returned func releases it and closes
// f. On failure f is closed.
func flock(ctx context.Context, f *os.File, how int) (func(), error) {
	locked := make(chan error, 1)
	go func() { locked <- unix.Flock(int(f.Fd()), how) }()
	select {
	case err := <-locked:
		if err != nil {
			f.Close()
			return nil, err
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		// Closing the file does not end a waiting flock; the goroutine
		// releases the lock when it gets it.
		go func() {
			<-locked
			f.Close()
		}()
		return nil, ctx.Err()
	}
}
