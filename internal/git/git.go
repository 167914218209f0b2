// Package git talks to Git remotes for pkgfleet: it validates repository
// URLs and refs so that no user string can become a git option or a
// transport helper, lists a remote's refs, and clones one exact commit,
// from a worker's cache of the remote's objects when it has one
// (objcache.go).
//
// It runs the git command-line client (what every admin already trusts for
// transports, proxies and ssh), with prompts off and protocols allowlisted;
// a listing of an https remote or a local repository, the poller's every
// poll, is read without a process where lsrefs.go can.
// It does not decide what to build; the poller and the API do.
package git

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
	"github.com/pkgfleet/pkgfleet/internal/version"
)

// URLPolicy says which repository URLs are acceptable.
type URLPolicy struct {
	AllowFile bool // file:// URLs (Git.AllowFileURLs)
}

var scpLike = regexp.MustCompile(`^([A-Za-z0-9._-]+@)?([A-Za-z0-9.-]+):([A-Za-z0-9._~/+-][A-Za-z0-9._~/+@-]*)$`)

// ValidateURL rejects anything but https, ssh, git (and file when allowed)
// URLs, and everything that git could read as an option or a transport
// helper (ext::, fd::, a leading '-', control characters).
func (p URLPolicy) ValidateURL(raw string) error {
	if raw == "" {
		return errors.New("url is required")
	}
	if strings.HasPrefix(raw, "-") {
		return errors.New("url must not start with '-'")
	}
	for _, r := range raw {
		if r < 0x20 || r == 0x7f || r == ' ' {
			return errors.New("url must not contain spaces or control characters")
		}
	}
	if strings.Contains(raw, "::") {
		return errors.New("url must not name a git transport helper ('::')")
	}
	if !strings.Contains(raw, "://") {
		m := scpLike.FindStringSubmatch(raw)
		if m == nil {
			return errors.New("url needs a scheme (https://, ssh://, git://) or the form user@host:path")
		}
		if strings.HasPrefix(m[2], "-") || strings.HasPrefix(m[3], "-") {
			return errors.New("url host and path must not start with '-'")
		}
		return nil // user@host:path, ssh
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url is not valid: %v", errors.Unwrap(err))
	}
	switch u.Scheme {
	case "https", "ssh", "git":
		if u.Host == "" {
			return fmt.Errorf("url %s://… has no host", u.Scheme)
		}
		if strings.HasPrefix(u.Host, "-") || strings.HasPrefix(u.Hostname(), "-") {
			return errors.New("url host must not start with '-'")
		}
		if u.User != nil {
			if _, hasPassword := u.User.Password(); hasPassword || u.Scheme == "https" {
				return errors.New("url must not contain a user name or password: use a git credential instead")
			}
		}
		if u.Path == "" || u.Path == "/" {
			return errors.New("url has no repository path")
		}
	case "file":
		if !p.AllowFile {
			return errors.New("file:// urls are not allowed (set Git.AllowFileURLs = true to allow them)")
		}
		if u.Host != "" && u.Host != "localhost" {
			return errors.New("file:// url must not name a host")
		}
		if !path.IsAbs(u.Path) {
			return errors.New("file:// url needs an absolute path")
		}
		// git decodes %XX in a file:// path but reads ? and # literally:
		// a path that needs them (or a space) comes percent-encoded.
		if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			return errors.New("file:// url must percent-encode '?' and '#' in its path (%3F, %23)")
		}
		if strings.ContainsFunc(u.Path, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return errors.New("file:// url must not encode control characters")
		}
	case "http":
		return errors.New("http:// urls are not allowed: use https://")
	case "":
		return errors.New("url needs a scheme (https://, ssh://, git://) or the form user@host:path")
	default:
		return fmt.Errorf("url scheme %q is not allowed (https, ssh, git)", u.Scheme)
	}
	return nil
}

var refName = regexp.MustCompile(`^[A-Za-z0-9._/+-]+$`)

// ValidateRef rejects branch and tag names that git would refuse or that
// could be read as options.
func ValidateRef(name string) error {
	switch {
	case name == "":
		return errors.New("name is empty")
	case strings.HasPrefix(name, "-"):
		return errors.New("must not start with '-'")
	case len(name) > 255:
		return errors.New("is longer than 255 characters")
	case !refName.MatchString(name):
		return errors.New("may contain only letters, digits and . _ / + -")
	case strings.Contains(name, ".."), strings.Contains(name, "//"), strings.HasSuffix(name, "/"),
		strings.HasSuffix(name, ".lock"), strings.HasPrefix(name, "/"), strings.HasSuffix(name, "."):
		return errors.New("is not a valid git ref name")
	}
	return nil
}

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// ValidateSHA accepts a full lower-case SHA-1 or SHA-256 object name.
func ValidateSHA(sha string) error {
	if !shaRE.MatchString(sha) {
		return errors.New("must be a full 40-character commit sha")
	}
	return nil
}

// Client runs git.
type Client struct {
	Policy URLPolicy
	// Env is added to git's environment (e.g. GIT_SSH_COMMAND for a
	// credential). Nil adds nothing.
	Env []string
	// Net is the outbound policy that every connection of git (and of the
	// git processes it starts: redirects, submodules) is dialled through,
	// by a proxy per operation (https through http.proxy, ssh and git://
	// through a connector); nil: the default policy (no loopback, private
	// or metadata addresses).
	Net *netpolicy.Policy
	// MaxFetchSize caps the bytes one operation (an ls-remote, a whole
	// clone with its submodules) receives through that proxy; 0: no cap.
	MaxFetchSize int64
	// ListWithGit lists every remote with git ls-remote, never with this
	// package's own readers (lsrefs.go): the way back, and the benchmark's
	// before.
	ListWithGit bool

	auth *Auth // WithAuth's credential, for lsrefs.go's https listing
}

// ErrTooLarge is the error of a clone that received more than
// Client.MaxFetchSize.
var ErrTooLarge = errors.New("the remote sent more than the clone size limit (Git.MaxCloneSize)")

// RemoteHost is the host and port (port "" when the URL names none) that
// a repository URL connects to; "" for a file:// URL or one that does not
// parse.
func RemoteHost(raw string) (host, port string) {
	if !strings.Contains(raw, "://") {
		if m := scpLike.FindStringSubmatch(raw); m != nil {
			return m[2], "22" // user@host:path, ssh
		}
		return "", ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "file" {
		return "", ""
	}
	port = u.Port()
	if n, ok := defaultPorts[u.Scheme]; ok && port == "" {
		port = strconv.Itoa(n)
	}
	return u.Hostname(), port
}

// way is one operation's way out: the proxy of its https connections,
// and the connector (connect.go) by which git's git:// and ssh
// transports reach the same proxy.
type way struct {
	px *netpolicy.Proxy
	// connector is the connector's path, for core.gitProxy (git runs it
	// without a shell, with the host and port of each git:// remote, a
	// submodule's too) and as ssh's ProxyCommand.
	connector string
	// sshTarget is the host:port of an ssh repository URL, fixed before
	// git starts (ssh's %h would pass a submodule's host through a
	// shell); "" when the repository is not ssh, and then ssh reaches
	// nothing.
	sshTarget string
}

// outbound starts the proxy of one operation on repoURL.
func (c *Client) outbound(repoURL string) (*way, error) {
	exe, err := connector()
	if err != nil && (isSSH(repoURL) || strings.HasPrefix(repoURL, "git://")) {
		return nil, err
	}
	px, err := c.Net.Listen(c.MaxFetchSize)
	if err != nil {
		return nil, err
	}
	w := &way{px: px, connector: exe}
	if isSSH(repoURL) {
		host, port := RemoteHost(repoURL)
		w.sshTarget = net.JoinHostPort(host, port)
	}
	return w, nil
}

func (w *way) close() { w.px.Close() }

func isSSH(raw string) bool {
	return strings.HasPrefix(raw, "ssh://") || (!strings.Contains(raw, "://") && scpLike.MatchString(raw))
}

// sshVia makes the last GIT_SSH_COMMAND of env (the default, or a
// credential's) connect through proxyCommand: the one place the ssh
// command is amended, whoever composed it.
func sshVia(env []string, proxyCommand string) []string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "GIT_SSH_COMMAND="); ok {
			env[i] = "GIT_SSH_COMMAND=" + v + ` -o "ProxyCommand=` + proxyCommand + `"`
			return env
		}
	}
	return env
}

// Refs is what a remote advertises.
type Refs struct {
	Head     string            // symbolic target of HEAD, e.g. "main"
	Branches map[string]string // name → sha
	Tags     map[string]string // name → commit sha (peeled)
}

// LsRemote lists the remote's HEAD, branches and tags: an https remote
// and a local repository without starting a process where lsrefs.go's
// readers can, anything else with git ls-remote.
func (c *Client) LsRemote(ctx context.Context, repoURL string) (*Refs, error) {
	if err := c.Policy.ValidateURL(repoURL); err != nil {
		return nil, err
	}
	if !c.ListWithGit {
		var refs *Refs
		err := errFallback
		switch {
		case strings.HasPrefix(repoURL, "https://"):
			refs, err = c.lsRemoteHTTP(ctx, repoURL)
		case strings.HasPrefix(repoURL, "file://"):
			refs, err = c.lsRemoteFile(repoURL)
		}
		if !errors.Is(err, errFallback) {
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", repoURL, err)
			}
			return refs, nil
		}
	}
	return c.lsRemoteGit(ctx, repoURL)
}

// lsRemoteGit lists the remote with git ls-remote.
func (c *Client) lsRemoteGit(ctx context.Context, repoURL string) (*Refs, error) {
	w, err := c.outbound(repoURL)
	if err != nil {
		return nil, err
	}
	defer w.close()
	out, err := c.run(ctx, "", w, "ls-remote", "--symref", "--", repoURL, "HEAD", "refs/heads/*", "refs/tags/*")
	if err != nil {
		return nil, fmt.Errorf("ls-remote %s: %w", repoURL, err)
	}
	col := newRefCollector()
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "ref: "); ok {
			if target, name, _ := strings.Cut(rest, "\t"); name == "HEAD" {
				col.head(target)
			}
			continue
		}
		if sha, name, ok := strings.Cut(line, "\t"); ok {
			col.ref(name, sha)
		}
	}
	return col.done(), nil
}

// Branch resolves a branch name ("" = the remote's default branch).
func (r *Refs) Branch(name string) (branch, sha string, err error) {
	if name == "" {
		name = r.Head
		if name == "" {
			return "", "", errors.New("remote has no default branch")
		}
	}
	sha, ok := r.Branches[name]
	if !ok {
		return "", "", fmt.Errorf("branch %q not found on the remote", name)
	}
	return name, sha, nil
}

// MatchingTags returns the tags matching the glob pattern ("" matches all),
// newest version first.
func (r *Refs) MatchingTags(pattern string) ([]string, error) {
	var out []string
	for tag := range r.Tags {
		ok, err := MatchTag(pattern, tag)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, tag)
		}
	}
	sort.Slice(out, func(i, j int) bool { return version.Compare(out[i], out[j]) > 0 })
	return out, nil
}

// MatchTag reports whether tag matches the glob pattern ("" matches all).
func MatchTag(pattern, tag string) (bool, error) {
	if pattern == "" {
		return true, nil
	}
	ok, err := path.Match(pattern, tag)
	if err != nil {
		return false, fmt.Errorf("tag pattern %q: %w", pattern, err)
	}
	return ok, nil
}

// CloneOptions says what to check out.
type CloneOptions struct {
	URL               string
	SHA               string
	Depth             int // of the files' history; 0 = full history
	RecurseSubmodules int // submodule recursion depth; 0 = none
	// Ref is the name the build was asked for (a branch, a tag or SHA).
	// When it names one of the remote's tags, or RefIsTag says it is a
	// tag, the checkout's tag of that name points at SHA, even if the
	// remote's tag has moved since: the build is of that release.
	Ref      string
	RefIsTag bool
	// FilesOnly fetches SHA's files at Depth and neither the history nor
	// the tags (a RefIsTag Ref is still written), and says no Describe:
	// for a package whose version is not git's (R), or for reading a
	// package's metadata.
	FilesOnly bool
	// History is the builder's history repository, kept across its
	// builds (history.go); "" fetches the history afresh.
	History string
	// Cache, with FilesOnly, is the worker's object cache the files are
	// checked out from (objcache.go); nil fetches them from the remote
	// into the checkout. From the cache, the checkout's .git holds no
	// objects (Depth shapes nothing the build sees) and the build sees
	// no path of the cache.
	Cache *ObjectCache
	// CacheKey names who may read what Cache holds of URL: clones with
	// the same key share the remote's cache (the pipeline passes the
	// builder's credential name, "" for none).
	CacheKey string
	// fetchHistory fetches a kept History beside the files on every
	// build, as before it served the checkout's own fetch (the
	// benchmark's comparison).
	fetchHistory bool
}

// Checkout is what Clone made.
type Checkout struct {
	// Time is the commit's committer time: the SOURCE_DATE_EPOCH of its
	// build, which every checked-out file's mtime is set to.
	Time time.Time
	// Describe is `git describe --tags --long` of the commit, as
	// setuptools-scm (and hatch-vcs through it) runs it in the checkout:
	// "v1.2.3-4-gabcdef0"; empty when no tag is in the commit's history.
	Describe string
}

// describe is setuptools-scm's own describe command (its
// DEFAULT_DESCRIBE) less --dirty (the checkout is clean), of commit sha.
func describe(sha string) []string {
	return []string{"describe", "--tags", "--long", "--match", "*[0-9]*", sha}
}

// Clone checks out exactly opts.SHA into dir, which must not exist or be
// empty. Unless opts.FilesOnly, the checkout is a full clone to the tools
// that version a package from git (history.go).
func (c *Client) Clone(ctx context.Context, dir string, opts CloneOptions) (Checkout, error) {
	if err := c.Policy.ValidateURL(opts.URL); err != nil {
		return Checkout{}, err
	}
	if err := ValidateSHA(opts.SHA); err != nil {
		return Checkout{}, fmt.Errorf("commit %q %w", opts.SHA, err)
	}
	fail := func(err error) (Checkout, error) {
		return Checkout{}, fmt.Errorf("clone %s at %s: %w", opts.URL, opts.SHA[:12], err)
	}
	if opts.FilesOnly && opts.Cache != nil {
		// A checkout from the cache may not contact the remote at all, so
		// the outbound policy judges the remote's host here, as the fetch
		// would: a host taken off Git.AllowedHosts is not built from what
		// the cache kept of it.
		if host, port := RemoteHost(opts.URL); host != "" {
			if _, err := c.Net.Resolve(ctx, host, port); err != nil {
				return fail(err)
			}
		}
		out, err := c.cloneFromCache(ctx, dir, opts)
		if !errors.Is(err, ErrTooLarge) {
			if err != nil {
				return fail(err)
			}
			return out, nil
		}
		// The remote's branches and tags are more than MaxFetchSize
		// where the commit's files alone may not be: those, as without
		// the cache.
		if err := os.RemoveAll(dir); err != nil {
			return fail(err)
		}
	}
	// Every step is a git process (fetch starts more), and starting one
	// costs milliseconds on a busy worker, so a build starts as few as it
	// can: the repository is laid out here instead of by `git init`, the
	// remote is named only when submodules need it (their relative URLs
	// resolve against origin; otherwise fetch takes the URL itself), and
	// the commit's time is read from the fetched objects (objects.go).
	if err := initRepo(dir); err != nil {
		return fail(err)
	}
	gitDir := filepath.Join(dir, ".git")
	// A kept history goes into the checkout before its fetch, which then
	// brings the files and the tags at once; the history fetch runs only
	// when the new commits are more than the fetch's depth (history.go).
	var kept *history
	if opts.Depth > 0 && !opts.FilesOnly && opts.History != "" && !opts.fetchHistory {
		h, err := lockKept(ctx, opts.History)
		if err != nil {
			return fail(err)
		}
		if h != nil {
			kept = h
			defer h.unlock()
			if err := h.copyInto(gitDir); err != nil {
				return fail(fmt.Errorf("history: %w", err))
			}
		}
	}
	// Else the history, beside the files.
	var hist chan historyResult
	if opts.Depth > 0 && !opts.FilesOnly && kept == nil {
		histDir := opts.History
		if histDir == "" {
			tmp, err := os.MkdirTemp(filepath.Dir(dir), ".history-")
			if err != nil {
				return fail(err)
			}
			defer os.RemoveAll(tmp)
			histDir = tmp
		}
		hist = make(chan historyResult, 1)
		histCtx, cancel := context.WithCancel(ctx)
		go func() {
			h, err := c.fetchHistory(histCtx, histDir, opts.URL, opts.SHA)
			hist <- historyResult{h, err}
		}()
		defer func() {
			cancel() // a failed clone does not wait for the history
			if r := <-hist; r.h != nil {
				r.h.unlock()
			}
		}()
	}
	var steps [][]string
	remote := opts.URL
	if opts.RecurseSubmodules > 0 {
		steps = append(steps, []string{"remote", "add", "origin", "--", opts.URL})
		remote = "origin"
	}
	fetch := []string{"fetch", "--quiet", "--no-tags"}
	if kept != nil {
		fetch = keptFetchArgs(opts.Depth, remote, opts.SHA)
	} else if opts.Depth > 0 {
		fetch = append(fetch, "--depth", strconv.Itoa(opts.Depth), "--", remote, opts.SHA)
	} else {
		fetch = append(fetch, "--", remote, opts.SHA)
		if !opts.FilesOnly {
			fetch = append(fetch, "+refs/tags/*:refs/tags/*")
		}
	}
	fetchAt := len(steps)
	steps = append(steps, fetch, []string{"-c", "advice.detachedHead=false", "checkout", "--quiet", opts.SHA})
	if opts.RecurseSubmodules > 0 {
		steps = append(steps, submoduleUpdate(opts))
	}
	w, err := c.outbound(opts.URL)
	if err != nil {
		return fail(err)
	}
	defer w.close() // one proxy for every step: MaxFetchSize bounds the whole clone
	// With a kept history, what follows the fetch (completing the
	// history, describing the commit) runs beside the checkout of the
	// files, which reads neither.
	var keptDescribe string
	var keptErr error
	var keptDone chan struct{}
	keptCtx, keptCancel := context.WithCancel(ctx)
	defer func() {
		keptCancel() // a failed clone does not wait for the history's fetch
		if keptDone != nil {
			<-keptDone // before the history's lock goes
		}
	}()
	for i, args := range steps {
		if _, err := c.run(ctx, dir, w, args...); err != nil {
			if kept != nil && i == fetchAt && ctx.Err() == nil {
				kept.discard() // it may be what broke the fetch; the next build fetches it anew
			}
			return fail(err)
		}
		if kept != nil && i == fetchAt {
			keptDone = make(chan struct{})
			go func() {
				defer close(keptDone)
				keptDescribe, keptErr = c.completeFromKept(keptCtx, kept, dir, opts.URL, opts.SHA)
			}()
		}
	}
	var out Checkout
	describeHere := opts.Depth == 0 && !opts.FilesOnly
	if keptDone != nil {
		<-keptDone
		if keptErr != nil {
			return fail(keptErr)
		}
		out.Describe = keptDescribe
	}
	if hist != nil {
		r := <-hist
		hist <- r // for the deferred unlock
		if r.err != nil {
			return fail(r.err)
		}
		if err := r.h.copyInto(filepath.Join(dir, ".git")); err != nil {
			return fail(fmt.Errorf("history: %w", err))
		}
		out.Describe = r.h.describe
	}
	if opts.Ref != "" && opts.Ref != opts.SHA && (opts.RefIsTag || hasTag(dir, opts.Ref)) &&
		!strings.HasPrefix(out.Describe, opts.Ref+"-0-g") { // not already the tag of SHA
		if err := writeTag(dir, opts.Ref, opts.SHA); err != nil {
			return fail(err)
		}
		describeHere = !opts.FilesOnly
	}
	if out.Time, err = readCommitTime(filepath.Join(dir, ".git"), opts.SHA); err != nil {
		if out.Time, err = c.commitTime(ctx, dir, opts.SHA); err != nil {
			return fail(err)
		}
	}
	if describeHere {
		out.Describe = c.describeIn(ctx, dir, opts.SHA)
	}
	// A checkout's mtimes are the time of the checkout; archives made from
	// it would differ on every build. Every file gets the commit's time.
	if err := setMtimes(dir, out.Time); err != nil {
		return fail(err)
	}
	return out, nil
}

// submoduleUpdate is the command that checks out a checkout's submodules
// as opts asks.
func submoduleUpdate(opts CloneOptions) []string {
	sub := []string{"submodule", "update", "--init", "--quiet"}
	if opts.RecurseSubmodules > 1 {
		sub = append(sub, "--recursive")
	}
	if opts.Depth > 0 {
		sub = append(sub, "--depth", strconv.Itoa(opts.Depth))
	}
	return sub
}

// describeIn is `git describe` of sha in the checkout at dir; "" when no
// tag is in sha's history.
func (c *Client) describeIn(ctx context.Context, dir, sha string) string {
	if !hasTags(filepath.Join(dir, ".git")) {
		return ""
	}
	d, err := c.run(ctx, dir, nil, describe(sha)...)
	if err != nil {
		return "" // fails only when no tag is in sha's history
	}
	return strings.TrimSpace(string(d))
}

type historyResult struct {
	h   *history
	err error
}

// gitConfig is a checkout's own repository configuration. The checkout
// lives for one build, so git does no upkeep of it: no fsync (a crashed
// build starts from a fresh directory), no automatic maintenance (a
// process of its own after every fetch), and fetched objects stay in the
// one pack they came in (not a file per object, each an inode to create).
const gitConfig = `[core]
	repositoryformatversion = 0
	filemode = true
	bare = false
	logallrefupdates = false
	fsync = none
` + noUpkeep

// bareConfig is the configuration of the repositories kept across builds
// (a builder's history, a remote's object cache): git's own upkeep stays
// off (it would run in the background of a build's clone; each repacks
// itself, maxHistoryPacks and maxCachePacks), and fetched objects stay in
// the packs they came in, which a checkout copies or reads.
const bareConfig = `[core]
	repositoryformatversion = 0
	bare = true
	logallrefupdates = false
` + noUpkeep

// noUpkeep ends every configuration pkgfleet writes: fetched objects stay
// in the pack they came in, and git runs no maintenance of its own.
const noUpkeep = `[fetch]
	unpackLimit = 1
[maintenance]
	auto = false
[gc]
	auto = 0
`

// initRepo lays out an empty repository in dir as `git init` would, less
// the hook samples and other template files (gitrepository-layout(5)).
func initRepo(dir string) error {
	return layoutRepo(filepath.Join(dir, ".git"), gitConfig, 0o755)
}

// layoutRepo writes the git directory gitDir of an empty repository with
// configuration config, its directories of mode dirMode and its files
// readable as far as they are. Its HEAD names an unborn branch until a
// checkout detaches it or a fetch writes the branch.
func layoutRepo(gitDir, config string, dirMode os.FileMode) error {
	for _, d := range []string{"objects/pack", "refs/heads", "refs/tags"} {
		if err := os.MkdirAll(filepath.Join(gitDir, d), dirMode); err != nil {
			return err
		}
	}
	fileMode := dirMode &^ 0o111
	if err := os.WriteFile(filepath.Join(gitDir, "config"), []byte(config), fileMode); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(gitDir, "HEAD"), []byte("ref: refs/heads/main\n"), fileMode)
}

// commitTime asks git for the committer time of commit sha in dir.
func (c *Client) commitTime(ctx context.Context, dir, sha string) (time.Time, error) {
	out, err := c.run(ctx, dir, nil, "log", "-1", "--format=%ct", sha)
	if err != nil {
		return time.Time{}, fmt.Errorf("commit time: %w", err)
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("commit time %q: %w", out, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// setMtimes sets the access and modification times of everything below
// root except .git to t, without following symlinks.
func setMtimes(root string, t time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == ".git" && p != root {
			return filepath.SkipDir
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// proxyEnv are the variables by which git or curl would choose another
// proxy, or none, for some hosts: the operation's proxy must see them all.
var proxyEnv = []string{"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"}

// run runs one git command; w, when set, is its way out, and the proxy's
// refusal or cap replaces git's own error.
func (c *Client) run(ctx context.Context, dir string, w *way, args ...string) ([]byte, error) {
	var px *netpolicy.Proxy
	if w != nil {
		px = w.px
	}
	protocols := "https:ssh:git"
	if c.Policy.AllowFile {
		protocols += ":file"
	}
	full := append([]string{
		// No repository may run code on this host: hooks and fsmonitor off,
		// protocols allowlisted (also for submodules).
		"-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
		"-c", "protocol.allow=never",
		"-c", "protocol.https.allow=always", "-c", "protocol.ssh.allow=always", "-c", "protocol.git.allow=always",
	}, args...)
	if c.Policy.AllowFile {
		full = append([]string{"-c", "protocol.file.allow=always"}, full...)
	}
	env := os.Environ()
	if px != nil {
		// On the command line, so that every git process this one starts
		// inherits it (GIT_CONFIG_PARAMETERS).
		full = append([]string{"-c", "http.proxy=" + px.URL()}, full...)
		// Without a connector (a program that did not call Init), git://
		// and ssh, a submodule's, reach nothing rather than everything.
		gitProxy := "false"
		if w.connector != "" {
			gitProxy = w.connector
		}
		full = append([]string{"-c", "core.gitProxy=" + gitProxy}, full...)
		env = slices.DeleteFunc(env, func(kv string) bool {
			name, _, _ := strings.Cut(kv, "=")
			return slices.Contains(proxyEnv, name)
		})
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-px.Over():
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	cmd := exec.CommandContext(ctx, "git", full...)
	cmd.Dir = dir
	// git leaves the network to helpers (git-remote-https, ssh) that hold
	// its output pipes: killing git alone would leave a helper waiting on
	// a silent remote, and Run waiting on the helper. The whole process
	// group goes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append(env,
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ASKPASS=/bin/false",
		"SSH_ASKPASS=/bin/false",
		"GIT_ALLOW_PROTOCOL="+protocols,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_SSH_COMMAND=ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
	)
	cmd.Env = append(cmd.Env, c.Env...)
	if w != nil {
		// The proxy's address and ssh's target travel in the environment,
		// which git passes to the connector untouched: no shell reads them.
		proxyCommand := "false"
		if w.connector != "" {
			proxyCommand = "'" + w.connector + "'" // ssh runs it with sh -c "exec …"
		}
		cmd.Env = append(cmd.Env, connectEnv+"="+px.Addr(), sshTargetEnv+"="+w.sshTarget)
		cmd.Env = sshVia(cmd.Env, proxyCommand)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if px != nil {
			select {
			case <-px.Over():
				return nil, ErrTooLarge
			default:
			}
			if re := px.Refused(); re != nil {
				return nil, fmt.Errorf("git remote %w", re)
			}
			if fe := px.Failed(); fe != nil && ctx.Err() == nil {
				return nil, fmt.Errorf("git remote: %w", fe)
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		if msg == "" {
			msg = err.Error()
		}
		return nil, &commandError{stderr: msg}
	}
	return stdout.Bytes(), nil
}

// writeTag makes tag a lightweight tag of sha in the checkout at dir: a
// loose ref, written directly (no git process), which takes precedence
// over a packed one. The name is checked as git checks ref names, which
// also keeps the file inside refs/tags.
func writeTag(dir, tag, sha string) error {
	if err := ValidateTagName(tag); err != nil {
		return err
	}
	file := filepath.Join(dir, ".git", "refs", "tags", filepath.FromSlash(tag))
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	if err := os.WriteFile(file, []byte(sha+"\n"), 0o644); err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	return nil
}

// hasTag reports whether the checkout at dir has tag, loose or packed.
func hasTag(dir, tag string) bool {
	if ValidateTagName(tag) != nil {
		return false
	}
	tags, _ := readTags(filepath.Join(dir, ".git"))
	for _, t := range tags {
		if t.ref == "refs/tags/"+tag {
			return true
		}
	}
	return false
}

// hasTags reports whether the repository whose git directory is gitDir
// has any tag.
func hasTags(gitDir string) bool {
	tags, _ := readTags(gitDir)
	return len(tags) > 0
}

// ValidateTagName refuses what git-check-ref-format(1) refuses in a tag's
// name (below refs/tags/).
func ValidateTagName(tag string) error {
	bad := func(why string) error { return fmt.Errorf("tag %q is not a valid tag name: %s", tag, why) }
	switch {
	case tag == "" || tag == "@":
		return bad("empty or @")
	case strings.HasSuffix(tag, "/") || strings.HasSuffix(tag, "."):
		return bad("ends with / or .")
	case strings.Contains(tag, "..") || strings.Contains(tag, "@{") || strings.Contains(tag, "//"):
		return bad("contains .., @{ or //")
	}
	for _, r := range tag {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\", r) {
			return bad(fmt.Sprintf("contains %q", r))
		}
	}
	for _, part := range strings.Split(tag, "/") {
		if strings.HasPrefix(part, ".") || strings.HasSuffix(part, ".lock") {
			return bad("a part starts with . or ends with .lock")
		}
	}
	return nil
}

// commandError is git's own failure: its stderr, which names hosts, ports
// and whatever a server answered. It goes to the server's log; what an
// API client or a build log sees is Explain's summary of it.
type commandError struct{ stderr string }

func (e *commandError) Error() string { return e.stderr }

// explanations map git's messages to the few an API client may see, first
// match wins. A remote's own words (a banner, an HTTP body) never pass:
// they would make git a port scanner and banner reader for whoever may
// name a URL.
const (
	sayNoSuchHost = "the remote's host name does not resolve"
	sayNoConnect  = "could not connect to the remote"
)

var explanations = []struct {
	say     string
	needles []string
}{
	{sayNoSuchHost, []string{"Could not resolve host", "Name or service not known", "Temporary failure in name resolution"}},
	{sayNoConnect, []string{"Connection refused", "Failed to connect", "Connection timed out", "Operation timed out", "No route to host", "Network is unreachable", "Couldn't connect"}},
	{"the remote's TLS certificate was not accepted", []string{"SSL certificate", "server certificate verification failed", "certificate verify failed", "SSL_ERROR", "gnutls_handshake"}},
	{"the remote refused the credentials, or needs some", []string{"Authentication failed", "could not read Username", "could not read Password", "terminal prompts disabled", "Permission denied (publickey", "Host key verification failed", "returned error: 401", "returned error: 403"}},
	{"the remote has no such repository", []string{"Repository not found", "does not appear to be a git repository", "returned error: 404", "not found"}},
	{"the remote does not have that commit or branch", []string{"not our ref", "couldn't find remote ref", "unadvertised object", "reference is not a tree"}},
}

// Explain is err as an API client or a build log may see it: the outbound
// policy's refusal, the size cap, a time-out and this package's own
// validation as they are; git's own text reduced to one of a few fixed
// messages. Log the full err where only the server's operator reads.
func Explain(err error) string {
	var re *netpolicy.RefusedError
	var ce *commandError
	var le *listError
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &re):
		return "git remote " + re.Error()
	case errors.Is(err, ErrTooLarge):
		return ErrTooLarge.Error()
	case errors.Is(err, errTooManyRefs):
		return errTooManyRefs.Error()
	case errors.As(err, &le):
		return le.say
	case errors.Is(err, context.DeadlineExceeded):
		return "the git remote did not answer in time"
	case errors.As(err, &dnsErr):
		return sayNoSuchHost
	case errors.As(err, &opErr):
		return sayNoConnect
	case errors.As(err, &ce):
		for _, e := range explanations {
			for _, n := range e.needles {
				if strings.Contains(ce.stderr, n) {
					return e.say
				}
			}
		}
		return "git could not read the remote (the server's log has git's message)"
	}
	return err.Error()
}

// Explained is err with Explain's text, still wrapping err: errors.Is and
// errors.As see a time-out, a cancellation or a refusal through it.
func Explained(err error) error {
	if err == nil {
		return nil
	}
	return &explainedError{err}
}

type explainedError struct{ err error }

func (e *explainedError) Error() string { return Explain(e.err) }
func (e *explainedError) Unwrap() error { return e.err }
