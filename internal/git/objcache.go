package git

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
)

// The object cache keeps, on a worker, a bare repository per remote (and
// credential) with every branch and tag of the remote, fetched
// incrementally: a files-only clone (FilesOnly) of a commit the cache has
// starts one git process (the checkout) and no network, and one of a
// commit it lacks first fetches what is new since the last fetch.
//
// The cache lives outside every sandbox (below Git.BuilderDir, of which a
// build sees only its own checkout and destination). A checkout borrows
// the cache's objects (objects/info/alternates) only while git checks the
// files out on the worker's side; the alternates file is removed before
// the clone returns, so the build's .git names no path of the cache, and
// what a build writes into its .git stays in its own work directory.
// The checkout's .git then holds no objects: a files-only build (R) reads
// none.
//
// A cache is shared by the builders of one remote that use one
// credential (or none): a builder may read from the cache only what its
// own credential could fetch. Reads take a shared lock of the remote's
// cache, a fetch and an eviction an exclusive one, so concurrent builds
// of one remote on one worker check out while nobody changes the cache.
// The whole cache is bounded in bytes; the least recently used remotes
// go first.

// ObjectCache is a worker's cache of its remotes' objects; its zero value
// is not usable (NewObjectCache), a nil one caches nothing.
type ObjectCache struct {
	dir      string
	maxBytes int64
	hits     atomic.Int64
	misses   atomic.Int64
	evicted  atomic.Int64
	bytes    atomic.Int64
	evicting sync.Mutex // one eviction pass at a time
	// measured runs the first eviction pass at the first clone: a bound
	// lowered since the last start applies, and Bytes is known.
	measured sync.Once
}

// NewObjectCache is a cache in dir (made when missing) of at most
// maxBytes.
func NewObjectCache(dir string, maxBytes int64) *ObjectCache {
	oc := &ObjectCache{dir: dir, maxBytes: maxBytes}
	oc.bytes.Store(-1) // not measured yet
	return oc
}

// CacheStats are an ObjectCache's figures since the worker started.
type CacheStats struct {
	Bytes     int64 // on disk after the last fetch or eviction; -1 before the first
	Hits      int64 // clones whose commit the cache had
	Misses    int64 // clones that fetched into the cache first
	Evictions int64 // remotes' caches removed to keep the bound
}

// Stats reads the cache's figures.
func (oc *ObjectCache) Stats() CacheStats {
	if oc == nil {
		return CacheStats{Bytes: -1}
	}
	return CacheStats{Bytes: oc.bytes.Load(), Hits: oc.hits.Load(), Misses: oc.misses.Load(), Evictions: oc.evicted.Load()}
}

// maxCachePacks is how many packs a remote's cache may hold before a
// fetch repacks it: each fetch adds one, and a lookup reads every index.
const maxCachePacks = 16

// remote is one remote's cache repository, locked.
type remote struct {
	dir    string
	unlock func()
	// fetched says that this clone fetched into the cache (a miss).
	fetched bool
}

// open returns the cache of url for whoever holds credential key, with
// commit sha in it, locked shared (or exclusively after a fetch) until
// unlock. A cache git cannot fetch into is made anew once.
func (oc *ObjectCache) open(ctx context.Context, c *Client, key, url, sha string) (*remote, error) {
	oc.measured.Do(oc.evict)
	sum := sha256.Sum256([]byte(key + "\n" + url))
	name := hex.EncodeToString(sum[:12])
	dir := filepath.Join(oc.dir, "repos", name)
	lockFile := filepath.Join(oc.dir, "locks", name)
	for _, d := range []string{filepath.Dir(dir), filepath.Dir(lockFile)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("object cache: %w", err)
		}
	}
	unlock, err := lockPath(ctx, lockFile, unix.LOCK_SH)
	if err != nil {
		return nil, fmt.Errorf("object cache: %w", err)
	}
	if hasObject(dir, sha) {
		oc.hits.Add(1)
		touch(dir)
		return &remote{dir: dir, unlock: unlock}, nil
	}
	unlock()
	if unlock, err = lockPath(ctx, lockFile, unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("object cache: %w", err)
	}
	r := &remote{dir: dir, unlock: unlock}
	if hasObject(dir, sha) { // another build fetched it meanwhile
		oc.hits.Add(1)
		touch(dir)
		return r, nil
	}
	oc.misses.Add(1)
	_, statErr := os.Stat(filepath.Join(dir, "HEAD"))
	err = c.fetchIntoCache(ctx, dir, url, sha)
	var refused *netpolicy.RefusedError
	if err != nil && statErr == nil && ctx.Err() == nil && !errors.Is(err, ErrTooLarge) && !errors.As(err, &refused) {
		// A cache that a crash left half-written fails its fetch: anew.
		if err = os.RemoveAll(dir); err == nil {
			err = c.fetchIntoCache(ctx, dir, url, sha)
		}
	}
	if err == nil && !hasObject(dir, sha) {
		err = errors.New("the fetch did not bring the commit")
	}
	if err != nil {
		unlock()
		return nil, err
	}
	r.fetched = true
	touch(dir)
	return r, nil
}

// discard removes the cache r, from which a checkout failed: it gives up
// r's lock and removes the cache under the exclusive one.
func (oc *ObjectCache) discard(ctx context.Context, r *remote) error {
	r.unlock()
	lockFile := filepath.Join(oc.dir, "locks", filepath.Base(r.dir))
	unlock, err := lockPath(ctx, lockFile, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	return os.RemoveAll(r.dir)
}

// fetchIntoCache fetches the remote's branches and tags, and sha (which
// none of them may name any more), into the cache repository at dir
// (made when missing), through the same way out as a clone's fetch.
func (c *Client) fetchIntoCache(ctx context.Context, dir, url, sha string) error {
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		if err := layoutRepo(dir, bareConfig, 0o700); err != nil {
			return err
		}
	}
	w, err := c.outbound(url)
	if err != nil {
		return err
	}
	defer w.close()
	// Every branch and tag: a burst of builds of one remote (a mass tag,
	// a push to many builders' branch) fetches once. --force: a branch
	// that was force-pushed follows the remote.
	if _, err := c.run(ctx, dir, w, "fetch", "--quiet", "--no-tags", "--force", "--no-write-fetch-head", "--", url,
		"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*", sha); err != nil {
		return fmt.Errorf("object cache fetch: %w", err)
	}
	if packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.idx")); len(packs) > maxCachePacks {
		if _, err := c.run(ctx, dir, nil, "repack", "-a", "-d", "-q"); err != nil {
			return fmt.Errorf("object cache repack: %w", err)
		}
	}
	return nil
}

// hasObject reports whether the repository whose git directory is gitDir
// has object sha, loose or in a pack. A pack's index is written (renamed
// into place) only once the pack is whole, and a fetch's pack carries
// everything its commits need, so a commit there can be checked out.
func hasObject(gitDir, sha string) bool {
	id, err := hex.DecodeString(sha)
	if err != nil || len(id) != 20 {
		return false // SHA-256: never cached, git reads it
	}
	if _, err := os.Stat(filepath.Join(gitDir, "objects", sha[:2], sha[2:])); err == nil {
		return true
	}
	f, _, err := findPacked(gitDir, id)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// touch marks the cache at dir as used now, for the eviction's order.
func touch(dir string) {
	now := time.Now()
	_ = os.Chtimes(dir, now, now)
}

// evict removes the least recently used remotes' caches until the
// whole fits maxBytes. A cache in use (locked) is skipped: its clone
// holds it, and the next eviction pass sees it again.
func (oc *ObjectCache) evict() {
	oc.evicting.Lock()
	defer oc.evicting.Unlock()
	entries, err := os.ReadDir(filepath.Join(oc.dir, "repos"))
	if err != nil {
		return
	}
	type cached struct {
		name string
		size int64
		used time.Time
	}
	var all []cached
	var total int64
	for _, e := range entries {
		dir := filepath.Join(oc.dir, "repos", e.Name())
		info, err := os.Stat(dir)
		if err != nil {
			continue
		}
		size := dirSize(dir)
		all = append(all, cached{e.Name(), size, info.ModTime()})
		total += size
	}
	sort.Slice(all, func(i, j int) bool { return all[i].used.Before(all[j].used) })
	for _, c := range all {
		if total <= oc.maxBytes {
			break
		}
		unlock, err := tryLockPath(filepath.Join(oc.dir, "locks", c.name))
		if err != nil {
			continue // in use
		}
		if os.RemoveAll(filepath.Join(oc.dir, "repos", c.name)) == nil {
			total -= c.size
			oc.evicted.Add(1)
		}
		unlock()
	}
	oc.bytes.Store(total)
}

// dirSize is the bytes of the files below dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// lockPath takes a flock of kind how (unix.LOCK_SH or LOCK_EX) on the file
// at name (made when missing), waiting for it as long as ctx allows.
func lockPath(ctx context.Context, name string, how int) (func(), error) {
	f, err := os.OpenFile(name, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return flock(ctx, f, how)
}

// tryLockPath takes an exclusive flock on the file at name if nobody
// holds one.
func tryLockPath(name string) (func(), error) {
	f, err := os.OpenFile(name, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// errCacheBroken is a checkout from the cache that git could not make:
// the cache is removed and made anew once.
var errCacheBroken = errors.New("the object cache could not check the commit out")

// cloneFromCache is Clone of a files-only checkout from opts.Cache.
func (c *Client) cloneFromCache(ctx context.Context, dir string, opts CloneOptions) (Checkout, error) {
	for attempt := 0; ; attempt++ {
		r, err := opts.Cache.open(ctx, c, opts.CacheKey, opts.URL, opts.SHA)
		if err != nil {
			return Checkout{}, err
		}
		out, err := c.checkoutFrom(ctx, r.dir, dir, opts)
		if errors.Is(err, errCacheBroken) && attempt == 0 && ctx.Err() == nil {
			if err := opts.Cache.discard(ctx, r); err != nil {
				return Checkout{}, fmt.Errorf("object cache: %w", err)
			}
			if err := os.RemoveAll(dir); err != nil {
				return Checkout{}, err
			}
			continue
		}
		r.unlock()
		if r.fetched {
			opts.Cache.evict() // unlocked: this remote too, if it alone is over the bound
		}
		return out, err
	}
}

// checkoutFrom checks opts.SHA out into dir from the cache repository at
// cacheDir, whose lock the caller holds.
func (c *Client) checkoutFrom(ctx context.Context, cacheDir, dir string, opts CloneOptions) (Checkout, error) {
	if err := initRepo(dir); err != nil {
		return Checkout{}, err
	}
	if opts.RecurseSubmodules == 0 { // submodules need git's index
		when, err := writeCheckout(cacheDir, opts.SHA, dir)
		switch {
		case err == nil:
			// HEAD detached at the commit, as git's checkout leaves it.
			if err := os.WriteFile(filepath.Join(dir, ".git", "HEAD"), []byte(opts.SHA+"\n"), 0o644); err != nil {
				return Checkout{}, err
			}
			return finishCheckout(dir, opts, Checkout{Time: when})
		case !errors.Is(err, errNotPlain):
			return Checkout{}, fmt.Errorf("%w: %w", errCacheBroken, err)
		}
		// git's own checkout, into an empty directory.
		if err := os.RemoveAll(dir); err != nil {
			return Checkout{}, err
		}
		if err := initRepo(dir); err != nil {
			return Checkout{}, err
		}
	}
	// The cache's objects, for git on this side only: removed below,
	// before the build sees the checkout.
	alternates := filepath.Join(dir, ".git", "objects", "info", "alternates")
	if err := os.MkdirAll(filepath.Dir(alternates), 0o755); err != nil {
		return Checkout{}, err
	}
	if err := os.WriteFile(alternates, []byte(filepath.Join(cacheDir, "objects")+"\n"), 0o644); err != nil {
		return Checkout{}, err
	}
	defer os.Remove(alternates)
	if opts.RecurseSubmodules > 0 {
		// Submodules' relative URLs resolve against origin.
		if _, err := c.run(ctx, dir, nil, "remote", "add", "origin", "--", opts.URL); err != nil {
			return Checkout{}, err
		}
	}
	if _, err := c.run(ctx, dir, nil, "-c", "advice.detachedHead=false", "checkout", "--quiet", opts.SHA); err != nil {
		if ctx.Err() != nil {
			return Checkout{}, ctx.Err()
		}
		return Checkout{}, fmt.Errorf("%w: %w", errCacheBroken, err)
	}
	if opts.RecurseSubmodules > 0 {
		// The submodules come from their remotes, through the clone's way
		// out, as without the cache.
		w, err := c.outbound(opts.URL)
		if err != nil {
			return Checkout{}, err
		}
		_, err = c.run(ctx, dir, w, submoduleUpdate(opts)...)
		w.close()
		if err != nil {
			return Checkout{}, err
		}
	}
	var out Checkout
	var err error
	if out.Time, err = readCommitTime(cacheDir, opts.SHA); err != nil {
		if out.Time, err = c.commitTime(ctx, dir, opts.SHA); err != nil {
			return Checkout{}, err
		}
	}
	if err := os.Remove(alternates); err != nil {
		return Checkout{}, err
	}
	return finishCheckout(dir, opts, out)
}

// finishCheckout writes the tag the build is of and sets every file's
// time to the commit's.
func finishCheckout(dir string, opts CloneOptions, out Checkout) (Checkout, error) {
	if opts.RefIsTag && opts.Ref != "" && opts.Ref != opts.SHA {
		if err := writeTag(dir, opts.Ref, opts.SHA); err != nil {
			return Checkout{}, err
		}
	}
	// As Clone's: every file gets the commit's time.
	if err := setMtimes(dir, out.Time); err != nil {
		return Checkout{}, err
	}
	return out, nil
}
