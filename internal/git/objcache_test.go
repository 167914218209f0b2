package git

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// cached is a test's object cache and the clone options of its remote.
type cached struct {
	t     *testing.T
	c     *Client
	cache *ObjectCache
	url   string
	dir   string // the remote's work tree
	out   string // where checkouts go
}

func setupCache(t *testing.T, files map[string]string, maxBytes int64) (*cached, string) {
	t.Helper()
	dir, sha := testenv.Repo(t, files)
	base := t.TempDir()
	return &cached{t: t, c: &Client{Policy: URLPolicy{AllowFile: true}},
		cache: NewObjectCache(filepath.Join(base, "objcache"), maxBytes),
		url:   "file://" + dir, dir: dir, out: filepath.Join(base, "work")}, sha
}

// clone checks sha out from the cache into a new directory and returns it.
func (s *cached) clone(sha string, mod ...func(*CloneOptions)) string {
	s.t.Helper()
	dst, err := os.MkdirTemp(mkdirAll(s.t, s.out), "co-")
	if err != nil {
		s.t.Fatal(err)
	}
	opts := CloneOptions{URL: s.url, SHA: sha, Depth: 1, FilesOnly: true, Cache: s.cache}
	for _, m := range mod {
		m(&opts)
	}
	if _, err := s.c.Clone(context.Background(), dst, opts); err != nil {
		s.t.Fatalf("clone %s: %v", sha[:8], err)
	}
	return dst
}

func mkdirAll(t testing.TB, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tree lists a checkout's files (less .git) as path → mode and content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return nil
		}
		info, _ := d.Info()
		if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			out[rel] = "link " + target
			return nil
		}
		b, err := os.ReadFile(p)
		out[rel] = fmt.Sprintf("%v %s", info.Mode().Perm()&0o100, b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// snapshot is every file of dir with its content's hash.
func snapshot(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			out[p] = sha256.Sum256(b)
		}
		return nil
	})
	return out
}

func TestACachedCheckoutIsTheCommitsTreeAndNamesNoPathOfTheCache(t *testing.T) {
	t.Parallel()
	s, first := setupCache(t, map[string]string{"DESCRIPTION": "Package: a\n", "R/a.R": "f <- 1\n", "tools/run.sh": "#!/bin/sh\n"}, 1<<30)
	testenv.Git(t, s.dir, "update-index", "--chmod=+x", "tools/run.sh")
	testenv.Git(t, s.dir, "commit", "--quiet", "-m", "exec")
	if err := os.Symlink("R/a.R", filepath.Join(s.dir, "link")); err != nil {
		t.Fatal(err)
	}
	testenv.Git(t, s.dir, "add", "link")
	testenv.Git(t, s.dir, "commit", "--quiet", "-m", "link")
	head := testenv.Commit(t, s.dir, map[string]string{"R/a.R": "f <- 2\n"}, "second")
	testenv.Git(t, s.dir, "tag", "v2")

	for _, sha := range []string{head, first, head} {
		co := s.clone(sha, func(o *CloneOptions) { o.Ref, o.RefIsTag = "v2", sha == head })
		want := t.TempDir()
		testenv.Git(t, s.dir, "--work-tree="+want, "checkout", sha, "--", ".")
		if got, w := tree(t, co), tree(t, want); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Fatalf("checkout of %s:\n%v\nwant the commit's tree:\n%v", sha[:8], got, w)
		}
		if got := testenv.Git(t, co, "rev-parse", "HEAD"); got != sha {
			t.Errorf("HEAD = %s, want %s", got, sha)
		}
		if sha == head {
			if b, err := os.ReadFile(filepath.Join(co, ".git", "refs", "tags", "v2")); err != nil || strings.TrimSpace(string(b)) != head {
				t.Errorf("tag v2 of the build = %q %v", b, err)
			}
		}
		// The build's .git names no path of the cache (the alternates are
		// gone) and holds no objects of its own.
		_ = filepath.WalkDir(filepath.Join(co, ".git"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(s.cache.dir)) {
					t.Errorf("%s names the cache", p)
				}
				if strings.Contains(p, "/objects/") {
					t.Errorf("object %s in the checkout", p)
				}
			}
			return nil
		})
	}
	// One fetch brought every branch and tag: the other commits were hits.
	if st := s.cache.Stats(); st.Misses != 1 || st.Hits != 2 || st.Bytes <= 0 {
		t.Errorf("stats = %+v, want 1 miss, 2 hits, bytes measured", st)
	}
}

func TestACachedCloneFetchesOnlyWhatIsNew(t *testing.T) {
	t.Parallel()
	files := map[string]string{}
	for i := range 50 {
		files[fmt.Sprintf("f%02d.txt", i)] = strings.Repeat(fmt.Sprintf("line %d\n", i), 100)
	}
	s, sha := setupCache(t, files, 1<<30)
	s.clone(sha)
	next := testenv.Commit(t, s.dir, map[string]string{"f00.txt": "changed\n"}, "one file")
	co := s.clone(next)
	if b, _ := os.ReadFile(filepath.Join(co, "f00.txt")); string(b) != "changed\n" {
		t.Fatalf("f00.txt = %q", b)
	}
	// The second fetch's pack has the new commit, its tree and one file.
	repo := onlyRepo(t, s.cache)
	packs, _ := filepath.Glob(filepath.Join(repo, "objects", "pack", "pack-*.idx"))
	if len(packs) != 2 {
		t.Fatalf("%d packs, want 2 (one per fetch)", len(packs))
	}
	var counts []int
	for _, idx := range packs {
		names, _, err := packNames(idx)
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, len(names))
	}
	// 52: the commit, its tree, 50 files. Then 3 (the commit, its tree,
	// the file), or 4 when index-pack appended the delta base of a thin
	// pack to complete it.
	slices.Sort(counts)
	if counts[0] > 4 || counts[1] != 52 {
		t.Errorf("objects per pack %v, want 52 and then 3 or 4", counts)
	}
	if st := s.cache.Stats(); st.Misses != 2 || st.Hits != 0 {
		t.Errorf("stats = %+v, want 2 misses", st)
	}
}

func onlyRepo(t *testing.T, oc *ObjectCache) string {
	t.Helper()
	repos, _ := filepath.Glob(filepath.Join(oc.dir, "repos", "*"))
	if len(repos) != 1 {
		t.Fatalf("cache repositories %v, want one", repos)
	}
	return repos[0]
}

func TestACachedCheckoutHasItsSubmodules(t *testing.T) {
	t.Parallel()
	sub, _ := testenv.Repo(t, map[string]string{"sub.txt": "from the submodule\n"})
	s, _ := setupCache(t, map[string]string{"a.txt": "a"}, 1<<30)
	testenv.Git(t, s.dir, "-c", "protocol.file.allow=always", "submodule", "add", "--quiet", "file://"+sub, "vendor/sub")
	testenv.Git(t, s.dir, "commit", "--quiet", "-m", "submodule")
	sha := testenv.Git(t, s.dir, "rev-parse", "HEAD")
	co := s.clone(sha, func(o *CloneOptions) { o.RecurseSubmodules = 1 })
	if b, err := os.ReadFile(filepath.Join(co, "vendor", "sub", "sub.txt")); err != nil || string(b) != "from the submodule\n" {
		t.Fatalf("submodule file = %q %v", b, err)
	}
}

func TestEvictionKeepsTheCacheWithinItsBoundLeastRecentlyUsedFirst(t *testing.T) {
	t.Parallel()
	big := map[string]string{}
	for i := range 20 {
		big[fmt.Sprintf("f%02d", i)] = fmt.Sprintf("%x", sha256.Sum256([]byte(fmt.Sprint(i))))
	}
	base := t.TempDir()
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	// Three remotes; the bound holds two of them.
	var urls, shas []string
	for range 3 {
		dir, sha := testenv.Repo(t, big)
		urls, shas = append(urls, "file://"+dir), append(shas, sha)
	}
	probe := NewObjectCache(filepath.Join(base, "probe"), 1<<30)
	clone := func(oc *ObjectCache, i int) {
		dst := filepath.Join(base, "work", fmt.Sprint(time.Now().UnixNano()))
		if _, err := c.Clone(context.Background(), dst, CloneOptions{URL: urls[i], SHA: shas[i], FilesOnly: true, Cache: oc}); err != nil {
			t.Fatal(err)
		}
	}
	clone(probe, 0)
	one := probe.Stats().Bytes
	oc := NewObjectCache(filepath.Join(base, "objcache"), 2*one+one/2)
	clone(oc, 0)
	clone(oc, 1)
	clone(oc, 0) // 0 is now the most recently used
	waitMtimeOrder(t)
	clone(oc, 2) // over the bound: 1 goes
	st := oc.Stats()
	if st.Evictions != 1 || st.Bytes > 2*one+one/2 {
		t.Fatalf("stats %+v, want one eviction and at most %d bytes", st, 2*one+one/2)
	}
	before := st.Misses
	clone(oc, 0)
	if oc.Stats().Misses != before {
		t.Error("the recently used remote was evicted")
	}
	clone(oc, 1)
	if oc.Stats().Misses != before+1 {
		t.Error("the least recently used remote was kept")
	}
	if b := oc.Stats().Bytes; b > 2*one+one/2 {
		t.Errorf("%d bytes, over the bound", b)
	}
}

// waitMtimeOrder lets the clock move past the file system's timestamp
// granularity, so that the next use sorts after the last.
func waitMtimeOrder(t *testing.T) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "tick")
	start := time.Now()
	for {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if info, err := os.Stat(f); err == nil && info.ModTime().After(start) {
			return
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the file system's clock does not move")
		}
	}
}

func TestACorruptCacheIsDetectedAndRebuilt(t *testing.T) {
	t.Parallel()
	s, sha := setupCache(t, map[string]string{"a.txt": strings.Repeat("pkgfleet\n", 1000)}, 1<<30)
	s.clone(sha)
	// Garbage over every pack's objects (its index still says the commit
	// is there).
	repo := onlyRepo(t, s.cache)
	packs, _ := filepath.Glob(filepath.Join(repo, "objects", "pack", "*.pack"))
	for _, p := range packs {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		for i := 12; i < len(b)-20; i++ {
			b[i] = 0x5a
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	co := s.clone(sha)
	if b, _ := os.ReadFile(filepath.Join(co, "a.txt")); string(b) != strings.Repeat("pkgfleet\n", 1000) {
		t.Fatalf("a.txt from the rebuilt cache = %.40q", b)
	}
	if st := s.cache.Stats(); st.Misses != 2 {
		t.Errorf("stats %+v: the broken cache was not fetched anew", st)
	}
}

func TestConcurrentClonesOfOneRemoteShareItsCache(t *testing.T) {
	t.Parallel()
	s, first := setupCache(t, map[string]string{"a.txt": "0"}, 1<<30)
	shas := []string{first}
	for i := 1; i < 8; i++ {
		shas = append(shas, testenv.Commit(t, s.dir, map[string]string{"a.txt": fmt.Sprint(i)}, "next"))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(shas))
	for round := range 2 {
		for i, sha := range shas {
			wg.Go(func() {
				dst := filepath.Join(s.out, fmt.Sprintf("%d-%d", round, i))
				if _, err := s.c.Clone(context.Background(), dst, CloneOptions{URL: s.url, SHA: sha, FilesOnly: true, Cache: s.cache}); err != nil {
					errs <- err
					return
				}
				if b, _ := os.ReadFile(filepath.Join(dst, "a.txt")); string(b) != fmt.Sprint(i) {
					errs <- fmt.Errorf("checkout of commit %d has a.txt %q", i, b)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := s.cache.Stats(); st.Hits+st.Misses != 16 || st.Misses < 1 || st.Misses > 8 {
		t.Errorf("stats %+v", st)
	}
}

// A hostile build, in the real sandbox, writes into its checkout's .git
// and goes looking for the cache: the cache is untouched, and the next
// build's checkout is the commit's tree.
func TestAHostileBuildCannotReachTheCacheNorTheNextBuild(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git")
	base := t.TempDir()
	for _, d := range []string{base, filepath.Dir(base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := sandbox.Config{
		DataDir: filepath.Join(base, "data"), BuilderDir: filepath.Join(base, "data", "builder"),
		ConfigDir: filepath.Join(base, "config"), SockFileDir: filepath.Join(base, "run"),
		TempDir: mkdirAll(t, filepath.Join(base, "tmp")), StorageLocations: []string{filepath.Join(base, "storage")},
		Defaults: sandbox.Limits{Timeout: 30 * time.Second, Output: 1 << 20},
		Tier:     sandbox.Tier(os.Getenv("PKGFLEET_TEST_TIER")),
	}
	for _, d := range []string{cfg.DataDir, cfg.BuilderDir, cfg.ConfigDir, cfg.SockFileDir, cfg.StorageLocations[0]} {
		mkdirAll(t, d)
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sb, err := sandbox.New(cfg)
	if err != nil {
		t.Fatalf("sandbox.New: %v", err)
	}
	dir, sha := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: a\n"})
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	// As the pipeline lays it out: the cache and the work directories
	// below Git.BuilderDir.
	oc := NewObjectCache(filepath.Join(cfg.BuilderDir, "objcache"), 1<<30)
	checkout := func(name string) (string, string) {
		work := mkdirAll(t, filepath.Join(cfg.BuilderDir, "work", name))
		if err := os.Chmod(work, 0o755); err != nil {
			t.Fatal(err)
		}
		src, dest := filepath.Join(work, "src"), mkdirAll(t, filepath.Join(work, "out"))
		if _, err := c.Clone(context.Background(), src, CloneOptions{URL: "file://" + dir, SHA: sha, FilesOnly: true, Cache: oc}); err != nil {
			t.Fatal(err)
		}
		return src, dest
	}
	src, dest := checkout("build-1")
	before := snapshot(t, oc.dir)
	if len(before) == 0 {
		t.Fatal("empty cache")
	}
	repo := onlyRepo(t, oc)
	script := `
for p in ` + oc.dir + ` ` + repo + `/objects ` + repo + `/objects/pack; do
	ls "$p" >/dev/null 2>&1 && echo "SEES $p"
	touch "$p/x" 2>/dev/null && echo "WROTE $p"
done
for f in ` + repo + `/objects/pack/*; do
	echo evil >> "$f" 2>/dev/null && echo "WROTE $f"
done
cat .git/objects/info/alternates 2>/dev/null && echo ALTERNATES
mkdir -p .git/objects/info && echo ` + repo + `/objects > .git/objects/info/alternates
echo '[core] hooksPath = /tmp' >> .git/config
echo evil > DESCRIPTION
echo done
`
	var out bytes.Buffer
	res, err := sb.Run(context.Background(), sandbox.Spec{
		Args: []string{"/bin/sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"},
		Source: src, Dest: dest, Dir: src, Output: &out,
	})
	if err != nil {
		t.Fatalf("sandbox: %v\n%s", err, out.String())
	}
	if !res.Success() || !strings.Contains(out.String(), "done") {
		t.Fatalf("the build did not run through: %+v\n%s", res, out.String())
	}
	for _, bad := range []string{"SEES", "WROTE", "ALTERNATES"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("the build reached the cache:\n%s", out.String())
			break
		}
	}
	if b, _ := os.ReadFile(filepath.Join(src, "DESCRIPTION")); string(b) != "evil\n" {
		t.Fatalf("the build did not run in its checkout: DESCRIPTION = %q", b)
	}
	if after := snapshot(t, oc.dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the cache changed during the build")
	}
	next, _ := checkout("build-2")
	if b, _ := os.ReadFile(filepath.Join(next, "DESCRIPTION")); string(b) != "Package: a\n" {
		t.Errorf("the next build's DESCRIPTION = %q", b)
	}
}

// The checkout written without git (checkout.go) resolves the packs'
// deltas: a file changed line by line over 40 commits, packed as deltas,
// comes out as git has it at each commit.
func TestACachedCheckoutResolvesDeltas(t *testing.T) {
	t.Parallel()
	lines := make([]string, 300)
	for i := range lines {
		lines[i] = fmt.Sprintf("line %d of a file long enough to be stored as deltas", i)
	}
	s, first := setupCache(t, map[string]string{"big.txt": strings.Join(lines, "\n"), "dir/sub/x.txt": "x"}, 1<<30)
	shas := []string{first}
	for i := range 40 {
		lines[i*7] = fmt.Sprintf("changed in commit %d", i)
		shas = append(shas, testenv.Commit(t, s.dir, map[string]string{"big.txt": strings.Join(lines, "\n"), fmt.Sprintf("dir/sub/f%d.txt", i): "f"}, "edit"))
	}
	testenv.Git(t, s.dir, "repack", "-adfq", "--depth=50", "--window=50")
	if out := testenv.Git(t, s.dir, "verify-pack", "-v", mustGlob(t, filepath.Join(s.dir, ".git", "objects", "pack", "*.idx"))); !strings.Contains(out, "chain length = 2") {
		t.Fatalf("the remote's pack has no delta chains:\n%s", out)
	}
	for _, sha := range []string{shas[40], shas[0], shas[17]} {
		co := s.clone(sha)
		want := t.TempDir()
		testenv.Git(t, s.dir, "--work-tree="+want, "checkout", sha, "--", ".")
		if got, w := tree(t, co), tree(t, want); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Fatalf("checkout of %s differs from git's", sha[:8])
		}
	}
}

func mustGlob(t *testing.T, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(pattern)
	if len(m) != 1 {
		t.Fatalf("%s: %v, want one", pattern, m)
	}
	return m[0]
}

// A tree with a .gitattributes is git's to check out: its line endings
// (and filters) apply as without the cache.
func TestACachedCheckoutAppliesGitattributes(t *testing.T) {
	t.Parallel()
	s, sha := setupCache(t, map[string]string{".gitattributes": "*.txt eol=crlf\n", "a.txt": "one\ntwo\n"}, 1<<30)
	co := s.clone(sha)
	if b, _ := os.ReadFile(filepath.Join(co, "a.txt")); string(b) != "one\r\ntwo\r\n" {
		t.Fatalf("a.txt = %q, want git's CRLF", b)
	}
}

// A remote whose branches and tags are more than the clone size limit
// is cloned as without the cache when the commit's files fit; the
// cache's fetch went through the same way out (its cap stopped it).
func TestARemoteTooLargeForTheCacheIsClonedWithoutIt(t *testing.T) {
	t.Parallel()
	work, small := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: small\n"})
	big := make([]byte, 3<<20) // incompressible: the pack is as large
	_, _ = rand.Read(big)
	testenv.Git(t, work, "checkout", "--quiet", "-b", "big")
	testenv.Commit(t, work, map[string]string{"blob.bin": string(big)}, "big")
	root := t.TempDir()
	testenv.Git(t, root, "clone", "--quiet", "--bare", work, "r.git")
	srv, ca := testenv.GitHTTPS(t, root)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := &Client{Net: exampleIsLoopback(t), Env: []string{"GIT_SSL_CAINFO=" + ca}, MaxFetchSize: 1 << 20}
	oc := NewObjectCache(filepath.Join(t.TempDir(), "objcache"), 1<<30)
	dir := filepath.Join(t.TempDir(), "co")
	if _, err := c.Clone(context.Background(), dir, CloneOptions{URL: "https://example.com:" + port + "/r.git", SHA: small, Depth: 1, FilesOnly: true, Cache: oc}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "DESCRIPTION")); string(b) != "Package: small\n" {
		t.Fatalf("DESCRIPTION = %q", b)
	}
	if st := oc.Stats(); st.Misses != 1 || hasObject(onlyRepo(t, oc), small) {
		t.Errorf("stats %+v: the cache's fetch was not the one cut at the cap", st)
	}
}

// Builders of one remote with other credentials (CacheKey) do not share
// its cache: each reads only what its own credential fetched.
func TestCachesAreApartPerCredential(t *testing.T) {
	t.Parallel()
	s, sha := setupCache(t, map[string]string{"a.txt": "a"}, 1<<30)
	s.clone(sha, func(o *CloneOptions) { o.CacheKey = "team-a" })
	s.clone(sha, func(o *CloneOptions) { o.CacheKey = "team-b" })
	s.clone(sha, func(o *CloneOptions) { o.CacheKey = "team-a" })
	repos, _ := filepath.Glob(filepath.Join(s.cache.dir, "repos", "*"))
	if st := s.cache.Stats(); st.Misses != 2 || st.Hits != 1 || len(repos) != 2 {
		t.Errorf("stats %+v, %d caches; want 2 misses, 1 hit, 2 caches", st, len(repos))
	}
}

// A bound lowered since the cache was filled applies at the first clone.
func TestALoweredBoundAppliesAtTheFirstClone(t *testing.T) {
	t.Parallel()
	s, sha := setupCache(t, map[string]string{"a.txt": "a"}, 1<<30)
	s.clone(sha)
	restarted := NewObjectCache(s.cache.dir, 1) // nothing fits
	s.cache = restarted
	s.clone(sha) // a hit, but for the first pass: no fetch would evict
	if st := restarted.Stats(); st.Evictions < 1 || st.Bytes < 0 {
		t.Errorf("stats %+v: the remote cached before the restart was kept over the bound", st)
	}
}

// A remote's host taken off the outbound policy is not built from what
// the cache kept of it: a checkout that would be a hit is refused, as its
// fetch would be, and served again once the host is allowed.
func TestACachedRemoteWhoseHostIsNoLongerAllowedIsRefused(t *testing.T) {
	t.Parallel()
	work, sha := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: kept\n"})
	root := t.TempDir()
	testenv.Git(t, root, "clone", "--quiet", "--bare", work, "r.git")
	srv, ca := testenv.GitHTTPS(t, root)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	url := "https://example.com:" + port + "/r.git"
	oc := NewObjectCache(filepath.Join(t.TempDir(), "objcache"), 1<<30)
	clone := func(p *netpolicy.Policy) (string, error) {
		dir := filepath.Join(t.TempDir(), "co")
		c := &Client{Net: p, Env: []string{"GIT_SSL_CAINFO=" + ca}}
		_, err := c.Clone(context.Background(), dir, CloneOptions{URL: url, SHA: sha, Depth: 1, FilesOnly: true, Cache: oc})
		return dir, err
	}
	if _, err := clone(exampleIsLoopback(t)); err != nil {
		t.Fatal(err)
	}
	// The same name, no longer allowed: it still resolves to loopback.
	revoked := &netpolicy.Policy{Lookup: exampleIsLoopback(t).Lookup}
	dir, err := clone(revoked)
	var re *netpolicy.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("clone after the host was taken off the policy: %v, want the policy's refusal", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, "DESCRIPTION")); serr == nil {
		t.Error("the refused clone wrote the commit's files")
	}
	if st := oc.Stats(); st.Hits != 0 || st.Misses != 1 {
		t.Errorf("stats %+v: the refused clone used the cache", st)
	}
	if _, err := clone(exampleIsLoopback(t)); err != nil {
		t.Fatalf("allowed again: %v", err)
	}
	if st := oc.Stats(); st.Hits != 1 {
		t.Errorf("stats %+v: allowed again, want a hit", st)
	}
}
