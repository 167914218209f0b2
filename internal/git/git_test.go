package git

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func TestValidateURLAcceptsRealRemotes(t *testing.T) {
	t.Parallel()
	p := URLPolicy{}
	for _, u := range []string{
		"https://github.com/rstudio/shiny.git",
		"https://gitlab.example.org/group/sub/pkg",
		"ssh://git@example.org/r/pkg.git",
		"ssh://git@example.org:2222/r/pkg.git",
		"git://example.org/pkg.git",
		"git@github.com:user/example.git",
	} {
		if err := p.ValidateURL(u); err != nil {
			t.Errorf("ValidateURL(%q) = %v", u, err)
		}
	}
}

func TestValidateURLRejectsInjection(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"ext::sh -c touch% /tmp/pwned":       "spaces",
		"ext::sh":                            "transport helper",
		"fd::17":                             "transport helper",
		"-upload-pack=touch /tmp/x":          "start with '-'",
		"--upload-pack=evil":                 "start with '-'",
		"ssh://-oProxyCommand=evil/x":        "host must not start with '-'",
		"git@-oProxyCommand=x:path":          "url needs a scheme",
		"https://example.org/a\nb":           "control characters",
		"https://example.org/a\x00b":         "control characters",
		"file:///srv/repo":                   "file:// urls are not allowed",
		"http://example.org/x.git":           "use https",
		"https://user:tok@example.org/x.git": "use a git credential",
		"https://tok@example.org/x.git":      "use a git credential",
		"ftp://example.org/x":                "not allowed",
		"/srv/repo":                          "needs a scheme",
		"":                                   "required",
		"https:///x":                         "no host",
		"https://example.org":                "no repository path",
	}
	p := URLPolicy{}
	for u, want := range cases {
		err := p.ValidateURL(u)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateURL(%q) = %v, want an error containing %q", u, err, want)
		}
	}
	if err := (URLPolicy{AllowFile: true}).ValidateURL("file:///srv/repo"); err != nil {
		t.Errorf("file:// with AllowFile: %v", err)
	}
	if err := (URLPolicy{AllowFile: true}).ValidateURL("file://otherhost/srv/repo"); err == nil {
		t.Error("file:// with a host was accepted")
	}
}

func TestValidateRefAndSHA(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"main", "release/1.x", "v1.2.3", "feature_x-1"} {
		if err := ValidateRef(ok); err != nil {
			t.Errorf("ValidateRef(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-x", "--upload-pack=x", "a..b", "a b", "a\nb", "x.lock", "/abs", "a//b", "a~1", "a^{}"} {
		if err := ValidateRef(bad); err == nil {
			t.Errorf("ValidateRef(%q) accepted", bad)
		}
	}
	if err := ValidateSHA(strings.Repeat("a", 40)); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"abc", strings.Repeat("A", 40), "-" + strings.Repeat("a", 39), strings.Repeat("g", 40)} {
		if err := ValidateSHA(bad); err == nil {
			t.Errorf("ValidateSHA(%q) accepted", bad)
		}
	}
}

func TestLsRemoteAndCloneAnExactCommit(t *testing.T) {
	t.Parallel()
	dir, first := testenv.Repo(t, map[string]string{"a.txt": "one"})
	testenv.Git(t, dir, "tag", "v1.0.0")
	testenv.Git(t, dir, "tag", "-a", "v1.1.0", "-m", "annotated")
	testenv.Git(t, dir, "tag", "other")
	second := testenv.Commit(t, dir, map[string]string{"a.txt": "two", "sub/b.txt": "b"}, "second")
	testenv.Git(t, dir, "tag", "v1.10.0")

	c := &Client{Policy: URLPolicy{AllowFile: true}}
	ctx := context.Background()
	refs, err := c.LsRemote(ctx, "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	branch, sha, err := refs.Branch("")
	if err != nil || branch != "main" || sha != second {
		t.Fatalf("default branch = %q %q %v, want main %s", branch, sha, err, second)
	}
	if refs.Tags["v1.1.0"] != first {
		t.Errorf("annotated tag resolves to %q, want its commit %s", refs.Tags["v1.1.0"], first)
	}
	tags, err := refs.MatchingTags("v*")
	if err != nil || strings.Join(tags, ",") != "v1.10.0,v1.1.0,v1.0.0" {
		t.Fatalf("MatchingTags(v*) = %v %v", tags, err)
	}
	if _, _, err := refs.Branch("nope"); err == nil {
		t.Error("missing branch resolved")
	}

	// Clone the older commit even though it is not a branch head.
	dst := filepath.Join(t.TempDir(), "checkout")
	if _, err := c.Clone(ctx, dst, CloneOptions{URL: "file://" + dir, SHA: first, Depth: 1}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dst, "a.txt"))
	if string(b) != "one" {
		t.Fatalf("checked out a.txt = %q, want the first commit's", b)
	}
	if got := testenv.Git(t, dst, "rev-parse", "HEAD"); got != first {
		t.Fatalf("HEAD = %s, want %s", got, first)
	}
	// The checkout's repository is lean: the fetched objects stay in their
	// packs (no file per object: one for the files, one for the history)
	// and no hook samples were copied.
	loose, _ := filepath.Glob(filepath.Join(dst, ".git", "objects", "??", "*"))
	packs, _ := filepath.Glob(filepath.Join(dst, ".git", "objects", "pack", "*.pack"))
	hooks, _ := filepath.Glob(filepath.Join(dst, ".git", "hooks", "*"))
	if len(loose) != 0 || len(packs) != 2 || len(hooks) != 0 {
		t.Fatalf("checkout's .git has %d loose objects, %d packs, hooks %v; want 0, 2, none", len(loose), len(packs), hooks)
	}
	if out := testenv.Git(t, dst, "status", "--porcelain"); out != "" {
		t.Fatalf("git status of the checkout:\n%s", out)
	}
}

func TestGitNeverRunsFileURLsUnlessAllowed(t *testing.T) {
	t.Parallel()
	dir, _ := testenv.Repo(t, map[string]string{"a": "a"})
	c := &Client{}
	if _, err := c.LsRemote(context.Background(), "file://"+dir); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("LsRemote(file://) = %v, want refusal", err)
	}
	if _, err := c.LsRemote(context.Background(), "ext::sh -c id"); err == nil {
		t.Fatal("ext:: accepted")
	}
}

func TestLsRemoteOfAMissingRepositoryIsAClearError(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "git")
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	_, err := c.LsRemote(context.Background(), "file:///nonexistent/repo")
	if err == nil || !strings.Contains(err.Error(), "ls-remote file:///nonexistent/repo") {
		t.Fatalf("err = %v", err)
	}
}

func TestCloneSetsEveryCheckedOutFileToTheCommitTime(t *testing.T) {
	t.Parallel()
	dir, sha := testenv.Repo(t, map[string]string{"pkg/a.txt": "a", "b.txt": "b"})
	want := time.Unix(mustAtoi(t, testenv.Git(t, dir, "log", "-1", "--format=%ct")), 0)
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	dst := filepath.Join(t.TempDir(), "checkout")
	co, err := c.Clone(context.Background(), dst, CloneOptions{URL: "file://" + dir, SHA: sha, Depth: 1})
	if got := co.Time; err != nil || !got.Equal(want) {
		t.Fatalf("Clone = %v %v, want the commit time %v", co.Time, err, want)
	}
	for _, p := range []string{".", "pkg", "pkg/a.txt", "b.txt"} {
		st, err := os.Lstat(filepath.Join(dst, p))
		if err != nil || !st.ModTime().Equal(want) {
			t.Errorf("%s: mtime %v (%v), want the commit's %v", p, st.ModTime(), err, want)
		}
	}
}

func mustAtoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestACloneForATagCarriesTheTag(t *testing.T) {
	t.Parallel()
	dir, sha := testenv.Repo(t, map[string]string{"a.txt": "a"})
	testenv.Git(t, dir, "tag", "-a", "release/1.2.3", "-m", "annotated")
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	dst := filepath.Join(t.TempDir(), "checkout")
	if _, err := c.Clone(context.Background(), dst, CloneOptions{URL: "file://" + dir, SHA: sha, Depth: 1, Ref: "release/1.2.3", RefIsTag: true}); err != nil {
		t.Fatal(err)
	}
	// What setuptools-scm asks git.
	if got := testenv.Git(t, dst, "describe", "--tags", "--long"); !strings.HasPrefix(got, "release/1.2.3-0-g") {
		t.Fatalf("git describe in the checkout = %q, want the tag", got)
	}
	if out := testenv.Git(t, dst, "status", "--porcelain"); out != "" {
		t.Fatalf("git status of the checkout:\n%s", out)
	}
	for _, tag := range []string{"../../config", "a/../b", ".hidden", "x.lock", "a b", "a~1", "a:b", "a\x00b", "x/", "@", "a@{1}", "a//b"} {
		if err := ValidateTagName(tag); err == nil {
			t.Errorf("tag %q accepted", tag)
		}
	}
	// A hostile name fails the clone and writes nothing outside refs/tags.
	bad := filepath.Join(t.TempDir(), "checkout")
	_, err := c.Clone(context.Background(), bad, CloneOptions{URL: "file://" + dir, SHA: sha, Depth: 1, Ref: "../../hooks/x", RefIsTag: true})
	if err == nil || !strings.Contains(err.Error(), "not a valid tag name") {
		t.Fatalf("clone with a hostile tag name: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bad, ".git", "hooks", "x")); !os.IsNotExist(err) {
		t.Fatalf("a hostile tag name wrote outside refs/tags: %v", err)
	}
}

// TestACheckoutDescribesItsCommitAsAFullCloneDoes builds a history that a
// shallow clone gets wrong (a tag, a branch forked before it and merged
// after it, 60 commits after the tag, a later tag on another branch) and
// checks the checkout's describe against a full clone's, with a server
// that filters (the history comes as commits only) and one that does not.
func TestACheckoutDescribesItsCommitAsAFullCloneDoes(t *testing.T) {
	t.Parallel()
	dir, _ := testenv.Repo(t, map[string]string{"a.txt": "0"})
	testenv.Commit(t, dir, map[string]string{"a.txt": "1"}, "one")
	testenv.Git(t, dir, "branch", "side")
	testenv.Commit(t, dir, map[string]string{"a.txt": "2"}, "two")
	testenv.Git(t, dir, "tag", "-a", "v1.0.0", "-m", "release")
	testenv.Git(t, dir, "checkout", "-q", "side")
	for i := range 3 {
		testenv.Commit(t, dir, map[string]string{"side.txt": strconv.Itoa(i)}, "side")
	}
	testenv.Git(t, dir, "checkout", "-q", "main")
	testenv.Git(t, dir, "merge", "-q", "--no-ff", "-m", "merge side", "side")
	for i := range 60 {
		testenv.Commit(t, dir, map[string]string{"a.txt": "after " + strconv.Itoa(i)}, "after")
	}
	head := testenv.Git(t, dir, "rev-parse", "HEAD")
	testenv.Git(t, dir, "checkout", "-q", "-b", "next", "HEAD~5")
	testenv.Commit(t, dir, map[string]string{"b.txt": "b"}, "next")
	testenv.Git(t, dir, "tag", "v2.0.0rc1")
	testenv.Git(t, dir, "checkout", "-q", "main")
	want := testenv.Git(t, dir, "describe", "--tags", "--long", "--match", "*[0-9]*", head)
	if !strings.HasPrefix(want, "v1.0.0-64-g") {
		t.Fatalf("the full clone describes HEAD as %q", want)
	}
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	for _, filter := range []string{"false", "true"} {
		testenv.Git(t, dir, "config", "uploadpack.allowFilter", filter)
		for _, depth := range []int{1, 0} {
			dst := filepath.Join(t.TempDir(), "checkout")
			co, err := c.Clone(context.Background(), dst, CloneOptions{URL: "file://" + dir, SHA: head, Depth: depth, Ref: "main"})
			if err != nil {
				t.Fatal(err)
			}
			// Both: what the record says, and what setuptools-scm's own
			// command says in the checkout.
			inside := testenv.Git(t, dst, "describe", "--dirty", "--tags", "--long", "--match", "*[0-9]*")
			if co.Describe != want || inside != want {
				t.Errorf("filter %s, depth %d: Describe %q, describe in the checkout %q; want the full clone's %q", filter, depth, co.Describe, inside, want)
			}
			if out := testenv.Git(t, dst, "status", "--porcelain"); out != "" {
				t.Errorf("git status of the checkout:\n%s", out)
			}
		}
	}
}

// TestARebuildOfATagIsOfTheTagEvenWhenTheRemoteMovedIt: a build by tag
// (a rerun by tag on any builder) carries the tag at the commit it was
// asked for; a branch build whose name is not a tag carries no new tag.
func TestARebuildOfATagIsOfTheTagEvenWhenTheRemoteMovedIt(t *testing.T) {
	t.Parallel()
	dir, first := testenv.Repo(t, map[string]string{"a.txt": "a"})
	testenv.Git(t, dir, "tag", "v1.0")
	testenv.Commit(t, dir, map[string]string{"a.txt": "b"}, "two")
	testenv.Git(t, dir, "tag", "-f", "v1.0") // moved after the build was queued
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	dst := filepath.Join(t.TempDir(), "checkout")
	co, err := c.Clone(context.Background(), dst, CloneOptions{URL: "file://" + dir, SHA: first, Depth: 1, Ref: "v1.0"})
	if err != nil || !strings.HasPrefix(co.Describe, "v1.0-0-g") {
		t.Fatalf("Describe = %q %v, want the tag at the commit built", co.Describe, err)
	}
	dst = filepath.Join(t.TempDir(), "checkout")
	co, err = c.Clone(context.Background(), dst, CloneOptions{URL: "file://" + dir, SHA: first, Depth: 1, Ref: "main"})
	if err != nil || co.Describe != "" {
		t.Fatalf("a branch build: Describe = %q %v, want none (the tag is on a later commit)", co.Describe, err)
	}
}

// TestAKeptHistoryServesTheNextBuildAndNoBuildWritesIt: the second clone
// with the same history repository describes a newer commit and a new
// tag, and what a build writes into its checkout's objects never reaches
// the history repository (the packs are copies).
func TestAKeptHistoryServesTheNextBuildAndNoBuildWritesIt(t *testing.T) {
	t.Parallel()
	dir, _ := testenv.Repo(t, map[string]string{"a.txt": "a"})
	testenv.Git(t, dir, "tag", "v1.0")
	second := testenv.Commit(t, dir, map[string]string{"a.txt": "b"}, "two")
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	hist := filepath.Join(t.TempDir(), "history")
	dst := filepath.Join(t.TempDir(), "checkout")
	co, err := c.Clone(context.Background(), dst, CloneOptions{URL: "file://" + dir, SHA: second, Depth: 1, History: hist})
	if err != nil || !strings.HasPrefix(co.Describe, "v1.0-1-g") {
		t.Fatalf("first build: Describe = %q %v, want v1.0-1-g…", co.Describe, err)
	}
	packs, _ := filepath.Glob(filepath.Join(dst, ".git", "objects", "pack", "*.pack"))
	for _, p := range packs {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("written by the build"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Commit(t, dir, map[string]string{"a.txt": "c"}, "three")
	testenv.Git(t, dir, "tag", "-a", "v1.1", "-m", "release")
	fourth := testenv.Commit(t, dir, map[string]string{"a.txt": "d"}, "four")
	dst = filepath.Join(t.TempDir(), "checkout")
	co, err = c.Clone(context.Background(), dst, CloneOptions{URL: "file://" + dir, SHA: fourth, Depth: 1, History: hist})
	if err != nil || !strings.HasPrefix(co.Describe, "v1.1-1-g") {
		t.Fatalf("second build: Describe = %q %v, want v1.1-1-g…", co.Describe, err)
	}
	if got := testenv.Git(t, dst, "describe", "--tags", "--long"); got != co.Describe {
		t.Fatalf("describe in the second checkout = %q, want %q", got, co.Describe)
	}
	if out := testenv.Git(t, dst, "rev-list", "--count", "HEAD"); out != "4" {
		t.Fatalf("the second checkout has %s commits of history, want 4", out)
	}
	// A history repository a crash left unreadable is made anew.
	if err := os.WriteFile(filepath.Join(hist, "HEAD"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst = filepath.Join(t.TempDir(), "checkout")
	co, err = c.Clone(context.Background(), dst, CloneOptions{URL: "file://" + dir, SHA: fourth, Depth: 1, History: hist})
	if err != nil || !strings.HasPrefix(co.Describe, "v1.1-1-g") {
		t.Fatalf("after a broken history repository: Describe = %q %v, want v1.1-1-g…", co.Describe, err)
	}
}

// TestAKeptHistoryFollowsTheRemoteAsAFullCloneDoes: builds that take
// their history from the builder's history repository (the checkout's
// own fetch bringing the new commit and the tags, or, past its depth, the
// history's own fetch) see what a full clone sees, build after build: a
// new commit, a tag added on an old commit, a tag deleted, a tag moved, a
// force push of several commits, the same commit again, and a build by
// tag.
func TestAKeptHistoryFollowsTheRemoteAsAFullCloneDoes(t *testing.T) {
	t.Parallel()
	dir, _ := testenv.Repo(t, map[string]string{"a.txt": "0"})
	for i := range 4 {
		testenv.Commit(t, dir, map[string]string{"a.txt": strconv.Itoa(i)}, "c")
		if i == 1 {
			testenv.Git(t, dir, "tag", "-a", "v1.0", "-m", "release")
			testenv.Git(t, dir, "tag", "old1")
		}
	}
	testenv.Git(t, dir, "config", "uploadpack.allowFilter", "true")
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	hist := filepath.Join(t.TempDir(), "history")
	build := func(step, ref string) {
		t.Helper()
		sha := testenv.Git(t, dir, "rev-parse", ref+"^{commit}")
		dst := filepath.Join(t.TempDir(), "checkout")
		co, err := c.Clone(context.Background(), dst, CloneOptions{URL: "file://" + dir, SHA: sha, Depth: 1, Ref: ref, History: hist})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		want := testenv.Git(t, dir, "describe", "--tags", "--long", "--match", "*[0-9]*", sha)
		inside := testenv.Git(t, dst, "describe", "--tags", "--long", "--match", "*[0-9]*")
		if co.Describe != want || inside != want {
			t.Errorf("%s: Describe %q, in the checkout %q; want the full clone's %q", step, co.Describe, inside, want)
		}
		tags := func(d string) string {
			return testenv.Git(t, d, "for-each-ref", "--format=%(refname) %(objectname)", "refs/tags")
		}
		if got, want := tags(dst), tags(dir); got != want {
			t.Errorf("%s: the checkout's tags\n%s\nwant the remote's\n%s", step, got, want)
		}
		if got, want := testenv.Git(t, dst, "rev-list", "--count", "HEAD"), testenv.Git(t, dir, "rev-list", "--count", sha); got != want {
			t.Errorf("%s: %s commits of history, want %s", step, got, want)
		}
		if out := testenv.Git(t, dst, "status", "--porcelain"); out != "" {
			t.Errorf("%s: git status of the checkout:\n%s", step, out)
		}
	}
	build("first build", "main")
	testenv.Commit(t, dir, map[string]string{"a.txt": "next"}, "next")
	build("a new commit", "main")
	if own, _ := filepath.Glob(filepath.Join(hist, "objects", "pack", "*.own")); len(own) != 1 {
		t.Fatalf("the history repository has %d packs of its own after a one-commit push, want 1 (its checkout's fetch served it)", len(own))
	}
	for i := range 3 { // described from the last build's describe
		testenv.Commit(t, dir, map[string]string{"a.txt": "more " + strconv.Itoa(i)}, "more")
		build("one more commit", "main")
	}
	testenv.Git(t, dir, "checkout", "-q", "-b", "side", "HEAD~1")
	testenv.Commit(t, dir, map[string]string{"side.txt": "s"}, "side")
	testenv.Git(t, dir, "checkout", "-q", "main")
	testenv.Git(t, dir, "merge", "-q", "--no-ff", "-m", "merge side", "side")
	build("a merge", "main")
	testenv.Git(t, dir, "tag", "-a", "v0.9", "-m", "late", "HEAD~4")
	testenv.Git(t, dir, "tag", "-d", "v1.0")
	testenv.Git(t, dir, "tag", "-f", "old1", "HEAD~1")
	testenv.Commit(t, dir, map[string]string{"a.txt": "after tags"}, "after tags")
	build("tags added, deleted and moved", "main")
	testenv.Git(t, dir, "reset", "-q", "--hard", "HEAD~3")
	for i := range 3 {
		testenv.Commit(t, dir, map[string]string{"b.txt": strconv.Itoa(i)}, "forced")
	}
	build("a force push of three commits", "main")
	build("the same commit again", "main")
	testenv.Git(t, dir, "tag", "v2.0", "HEAD~1")
	build("a build by tag", "v2.0")
}
