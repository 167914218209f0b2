package git

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// packedRepo is a repository of one commit of n small files in ten
// directories, packed as a forge's would be.
func packedRepo(b *testing.B, n int) (dir, sha string) {
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("d%d/f%03d.txt", i%10, i)] = fmt.Sprintf("file %d\n", i)
	}
	dir, sha = testenv.Repo(b, files)
	testenv.Git(b, dir, "repack", "-adq")
	return dir, sha
}

// BenchmarkClone clones one commit of a packed repository, as a build's
// checkout does, and reports the CPU it took (this process and the git
// processes it started) beside the wall time: a small package (4 files)
// and a large one (700 files).
func BenchmarkClone(b *testing.B) {
	for _, n := range []int{4, 700} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			dir, sha := packedRepo(b, n)
			c := &Client{Policy: URLPolicy{AllowFile: true}}
			tmp := b.TempDir()
			cpu := cpuTime()
			i := 0
			for b.Loop() {
				i++
				if _, err := c.Clone(context.Background(), filepath.Join(tmp, fmt.Sprint(i)), CloneOptions{URL: "file://" + dir, SHA: sha, Depth: 1}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		})
	}
}

// cpuTime is the CPU this process and the children it reaped have used.
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + children.Utime.Nano() + children.Stime.Nano())
}

// BenchmarkCloneHistory clones the head of a 1000-commit repository with
// a tag every 100 commits (50 files), as a build's checkout does, one new
// commit on the remote before each round (a branch builder's next build).
// Each round clones it every way, in turn, so that a busy machine slows
// them alike:
//
//   - files: the commit's files alone (every build's clone before issue
//     23; FilesOnly now);
//   - kept: with the history and tags from the builder's history
//     repository, so that `git describe` says what it says in a full
//     clone (a build's clone now);
//   - kept-fetch: the same, the history fetched beside the files on
//     every build (a build's clone before the kept history served the
//     checkout's own fetch);
//   - fresh: the same with a new history repository each time (a
//     builder's first build on a worker);
//   - unfiltered: kept, from a server that does not filter.
//
// <way>-p50-ms is the clone's own wall time, <way>-cpu-ms its CPU.
func BenchmarkCloneHistory(b *testing.B) {
	dir := historyRepo(b, 1000, 50, 100)
	unfiltered := b.TempDir()
	testenv.Git(b, unfiltered, "init", "--quiet", "--bare")
	testenv.Git(b, unfiltered, "config", "uploadpack.allowFilter", "false")
	testenv.Git(b, dir, "config", "uploadpack.allowFilter", "true")
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	tmp := b.TempDir()
	ways := []struct {
		name string
		opts CloneOptions
	}{
		{"files", CloneOptions{URL: "file://" + dir, Depth: 1, FilesOnly: true}},
		{"kept", CloneOptions{URL: "file://" + dir, Depth: 1, History: filepath.Join(tmp, "kept")}},
		{"kept-fetch", CloneOptions{URL: "file://" + dir, Depth: 1, History: filepath.Join(tmp, "kept-fetch"), fetchHistory: true}},
		{"fresh", CloneOptions{URL: "file://" + dir, Depth: 1}},
		{"unfiltered", CloneOptions{URL: "file://" + unfiltered, Depth: 1, History: filepath.Join(tmp, "unfiltered")}},
	}
	walls := make([][]time.Duration, len(ways))
	cpus := make([][]time.Duration, len(ways))
	i := 0
	for b.Loop() {
		i++
		sha := newCommit(b, dir, i)
		testenv.Git(b, dir, "push", "--quiet", "--force", unfiltered, "--tags", "main")
		for k := range ways {
			w := &ways[(k+i)%len(ways)]
			opts := w.opts
			opts.SHA = sha
			began, cpuBegan := time.Now(), cpuTime()
			if _, err := c.Clone(context.Background(), filepath.Join(tmp, fmt.Sprint(i, w.name)), opts); err != nil {
				b.Fatal(err)
			}
			walls[(k+i)%len(ways)] = append(walls[(k+i)%len(ways)], time.Since(began))
			cpus[(k+i)%len(ways)] = append(cpus[(k+i)%len(ways)], cpuTime()-cpuBegan)
		}
	}
	for k, w := range ways {
		b.ReportMetric(p50ms(walls[k]), w.name+"-p50-ms")
		b.ReportMetric(p50ms(cpus[k]), w.name+"-cpu-ms")
	}
}

func p50ms(ds []time.Duration) float64 {
	slices.Sort(ds)
	return float64(ds[len(ds)/2]) / float64(time.Millisecond)
}

// newCommit adds a commit to main in dir (one git process) and returns it.
func newCommit(b *testing.B, dir string, i int) string {
	in := fmt.Sprintf("commit refs/heads/main\ncommitter t <t@invalid> %d +0000\ndata 3\nnew\nfrom refs/heads/main^0\nM 644 inline new.txt\ndata %d\n%d\n\n",
		1800000000+i, len(strconv.Itoa(i))+1, i)
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir, cmd.Stdin = dir, strings.NewReader(in)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("fast-import: %v\n%s", err, out)
	}
	return testenv.Git(b, dir, "rev-parse", "main")
}

// historyRepo makes a packed repository of commits commits, each
// changing one of files files, with an annotated tag every tagEvery
// commits, in one git fast-import.
func historyRepo(b *testing.B, commits, files, tagEvery int) string {
	dir := b.TempDir()
	testenv.Git(b, dir, "init", "--quiet", "--initial-branch=main")
	var in strings.Builder
	lines := make([]string, files)
	for i := range commits {
		n := i % files
		lines[n] += fmt.Sprintf("line %d\n", i)
		fmt.Fprintf(&in, "commit refs/heads/main\nmark :%d\ncommitter t <t@invalid> %d +0000\ndata 3\nc%d\n", i+1, 1700000000+i*60, i%10)
		if i == 0 {
			for f := range files {
				fmt.Fprintf(&in, "M 644 inline f%02d.txt\ndata %d\n%s\n", f, len(lines[f]), lines[f])
			}
		} else {
			fmt.Fprintf(&in, "M 644 inline f%02d.txt\ndata %d\n%s\n", n, len(lines[n]), lines[n])
		}
		if (i+1)%tagEvery == 0 {
			fmt.Fprintf(&in, "tag v0.%d.0\nfrom :%d\ntagger t <t@invalid> %d +0000\ndata 3\nrel\n", (i+1)/tagEvery, i+1, 1700000000+i*60)
		}
	}
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir, cmd.Stdin = dir, strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("fast-import: %v\n%s", err, out)
	}
	testenv.Git(b, dir, "repack", "-adq")
	return dir
}

// BenchmarkCloneCached clones one commit of a remote from a warm object
// cache, as an R build's checkout does (FilesOnly, Worker.ObjectCacheSize
// set), and the same clone without the cache (the remote fetched into
// the checkout): a small package (4 files) and a large one (700 files).
// <way>-p50-ms is the clone's wall time, <way>-cpu-ms its CPU with git's
// processes.
func BenchmarkCloneCached(b *testing.B) {
	for _, n := range []int{4, 700} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			dir, sha := packedRepo(b, n)
			c := &Client{Policy: URLPolicy{AllowFile: true}}
			tmp := b.TempDir()
			oc := NewObjectCache(filepath.Join(tmp, "objcache"), 1<<30)
			ways := []struct {
				name  string
				cache *ObjectCache
			}{{"cached", oc}, {"direct", nil}}
			i := 0
			clone := func(cache *ObjectCache) {
				i++
				if _, err := c.Clone(context.Background(), filepath.Join(tmp, fmt.Sprint(i)), CloneOptions{URL: "file://" + dir, SHA: sha, Depth: 1, FilesOnly: true, Cache: cache}); err != nil {
					b.Fatal(err)
				}
			}
			clone(oc) // warm
			walls := map[string][]time.Duration{}
			cpus := map[string]time.Duration{}
			for b.Loop() {
				for _, w := range ways {
					cpu, start := cpuTime(), time.Now()
					clone(w.cache)
					walls[w.name] = append(walls[w.name], time.Since(start))
					cpus[w.name] += cpuTime() - cpu
				}
			}
			for _, w := range ways {
				b.ReportMetric(p50ms(walls[w.name]), w.name+"-p50-ms")
				b.ReportMetric(float64(cpus[w.name])/float64(time.Millisecond)/float64(b.N), w.name+"-cpu-ms")
			}
		})
	}
}

// BenchmarkListRefs lists a local repository (two branches, 20 tags, 10
// of them annotated) each way the poller could, and reports the CPU it
// took, git's processes included:
//
//   - ls-remote: git ls-remote, as every poll did before (two processes);
//   - files: lsrefs.go's reading of the repository's ref files;
//   - persistent: one long-lived `git upload-pack` (protocol v2) per
//     remote, asked ls-refs again each time; it reports, as fresh=, whether
//     it sees a branch created after it started (git's loose-ref cache
//     lives as long as the process).
func BenchmarkListRefs(b *testing.B) {
	work, _ := testenv.Repo(b, map[string]string{"f": "1"})
	testenv.Git(b, work, "branch", "dev")
	for i := range 20 {
		if i%2 == 0 {
			testenv.Git(b, work, "tag", fmt.Sprintf("v%d", i))
		} else {
			testenv.Git(b, work, "tag", "-a", "-m", "t", fmt.Sprintf("v%d", i))
		}
	}
	root := b.TempDir()
	testenv.Git(b, root, "clone", "--quiet", "--bare", "--no-local", work, "r.git")
	repo := filepath.Join(root, "r.git")
	url := "file://" + repo
	run := func(b *testing.B, list func() error) {
		cpu := cpuTime()
		for b.Loop() {
			if err := list(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cpuTime()-cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	}
	b.Run("ls-remote", func(b *testing.B) {
		c := &Client{Policy: URLPolicy{AllowFile: true}, ListWithGit: true}
		run(b, func() error { _, err := c.LsRemote(context.Background(), url); return err })
	})
	b.Run("files", func(b *testing.B) {
		c := &Client{Policy: URLPolicy{AllowFile: true}}
		run(b, func() error { _, err := c.LsRemote(context.Background(), url); return err })
	})
	b.Run("persistent", func(b *testing.B) {
		cmd := exec.Command("git", "upload-pack", repo)
		cmd.Env = append(cmd.Environ(), "GIT_PROTOCOL=version=2")
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { in.Close(); _ = cmd.Wait() }()
		if _, err := readInfoRefs(out, listingLimit, newRefCollector()); err != nil {
			b.Fatal(err)
		}
		list := func() (*Refs, error) {
			if _, err := io.WriteString(in, lsRefsRequest(advertisement{v2: true})); err != nil {
				return nil, err
			}
			c := newRefCollector()
			return c.done(), readLsRefs(out, listingLimit, c)
		}
		if _, err := list(); err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("fresh-%d", b.N)
		testenv.Git(b, repo, "branch", name, "dev")
		refs, err := list()
		if err != nil {
			b.Fatal(err)
		}
		_, fresh := refs.Branches[name]
		run(b, func() error { _, err := list(); return err })
		b.ReportMetric(map[bool]float64{true: 1}[fresh], "fresh")
	})
}
