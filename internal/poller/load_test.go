package poller

import (
	"bufio"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// gitServerEnv makes the test binary the load test's smart-HTTP server
// (serveGit) instead of running tests: the server's CPU (git
// http-backend's processes) is then its own, not counted as the poller's.
const gitServerEnv = "PKGFLEET_POLL_GITSERVER"

// serveGit serves the bare repositories under root over https with git
// http-backend, prints its URL and CA file, and exits when stdin closes.
func serveGit(root string) {
	srv := httptest.NewUnstartedServer(&cgi.Handler{Path: "/usr/lib/git-core/git-http-backend",
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}})
	// A client that goes mid-handshake (a poller stopped between cases)
	// is no news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	ca := filepath.Join(root, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(srv.URL, ca)
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Close()
	os.Exit(0)
}

// startGitServer starts serveGit in a process of its own for the test and
// returns its URL, its CA file and a reading of its CPU time so far (its
// CGI children's included).
func startGitServer(t *testing.T, root string) (url, ca string, cpu func() time.Duration) {
	t.Helper()
	testenv.Require(t, "git")
	if _, err := os.Stat("/usr/lib/git-core/git-http-backend"); err != nil {
		t.Fatalf("git http-backend is required: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), gitServerEnv+"="+root)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("git server: %v", err)
	}
	url, ca, _ = strings.Cut(strings.TrimSpace(line), " ")
	pid := cmd.Process.Pid
	return url, ca, func() time.Duration {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		var ticks int64
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			n, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += n
		}
		return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100
	}
}

// pollFleet is one load case: builders over remotes, half of the remotes
// local repositories (file://), half on the smart-HTTP server.
type pollFleet struct {
	builders, remotes int
	interval          time.Duration
	before            bool // git ls-remote for each builder, as before remotes were shared
}

// pollFigures are what one case measured over its steady round.
type pollFigures struct {
	firstRound, round time.Duration
	listings          int64
	apiCPU, serverCPU time.Duration
}

// runPollFleet polls the fleet until every builder has been polled three
// times and measures the third round: the first is every new builder at
// once, the second moves each remote onto its slot, the third is the
// steady state.
func runPollFleet(t *testing.T, f pollFleet, urls []string, client *git.Client, serverCPU func() time.Duration) pollFigures {
	t.Helper()
	e := setup(t)
	for i := range f.builders {
		// A tag builder whose pattern matches nothing: the poll is all
		// there is, no build is queued.
		b := registry.Builder{Source: "src", Name: fmt.Sprintf("b%05d", i), URL: urls[i%f.remotes],
			BuildTrigger: registry.TriggerTags, TagPattern: "never-*"}
		if err := (registry.Policy{URLs: client.Policy, Net: client.Net}).ValidateBuilder(&b); err != nil {
			t.Fatal(err)
		}
		if err := e.reg.CreateBuilder(context.Background(), &b); err != nil {
			t.Fatal(err)
		}
	}
	p, rdb := e.poller("P")
	p.Git, p.listEach = client, f.before
	p.Interval, p.Concurrency, p.Tick, p.Timeout = f.interval, 8, time.Second, time.Minute
	var listings, failures atomic.Int64
	p.GitFor = func(context.Context, *registry.Builder) (*git.Client, func(), error) {
		listings.Add(1)
		return client, func() {}, nil
	}
	p.Observe = func(outcome string, _ time.Duration) {
		if outcome != "ok" {
			failures.Add(1)
		}
	}
	var mu sync.Mutex
	polls := map[string]int{}
	reached := map[int]int{} // n → builders polled n times or more
	p.polled = func(key string) {
		mu.Lock()
		defer mu.Unlock()
		polls[key]++
		reached[polls[key]]++
	}
	rounds := func(n int) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return reached[n] == f.builders }
	}
	start := time.Now()
	stop := e.start(p, rdb)
	defer stop() // before the next case is measured
	// The before case's first round is slow.
	wait := 3*f.interval + time.Duration(f.builders)*50*time.Millisecond
	testenv.Eventually(t, wait, "every builder polled once", rounds(1))
	firstRound := time.Since(start)
	testenv.Eventually(t, wait, "every builder polled twice", rounds(2))
	cpu0, server0, listed0, at0 := processCPU(), serverCPU(), listings.Load(), time.Now()
	testenv.Eventually(t, wait, "every builder polled three times", rounds(3))
	fig := pollFigures{firstRound: firstRound, round: time.Since(at0), listings: listings.Load() - listed0,
		apiCPU: processCPU() - cpu0, serverCPU: serverCPU() - server0}
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d polls failed", n)
	}
	if b := e.builds("b00000"); len(b) != 0 {
		t.Fatalf("builds queued: %v", b)
	}
	return fig
}

// processCPU is this process's CPU time and that of its children that
// ended (git ls-remote's processes).
func processCPU() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + kids.Utime.Nano() + kids.Stime.Nano())
}

// pollRemotes makes n bare repositories under root (a commit, two
// branches, a lightweight and an annotated tag), the first half listed as
// file:// URLs and the rest as https URLs of the server, which it starts.
func pollRemotes(t *testing.T, n int) (urls []string, client *git.Client, serverCPU func() time.Duration) {
	t.Helper()
	work, _ := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: p\nVersion: 1.0\n"})
	testenv.Git(t, work, "branch", "dev")
	testenv.Git(t, work, "tag", "v1.0")
	testenv.Git(t, work, "tag", "-a", "-m", "one", "v1.0.1")
	root := t.TempDir()
	testenv.Git(t, root, "clone", "--quiet", "--bare", "--no-local", work, "template.git")
	for i := range n {
		if err := copyDir(filepath.Join(root, "template.git"), filepath.Join(root, fmt.Sprintf("r%04d.git", i))); err != nil {
			t.Fatal(err)
		}
	}
	url, ca, serverCPU := startGitServer(t, root)
	for i := range n {
		if i < n/2 {
			urls = append(urls, fmt.Sprintf("file://%s/r%04d.git", root, i))
		} else {
			urls = append(urls, fmt.Sprintf("%s/r%04d.git", url, i))
		}
	}
	policy, err := netpolicy.New([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return urls, &git.Client{Policy: git.URLPolicy{AllowFile: true}, Net: policy, Env: []string{"GIT_SSL_CAINFO=" + ca}}, serverCPU
}

func copyDir(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestPollingManyBuildersListsEachRemoteOncePerRound polls builders over
// shared remotes (200 over 20 in `go test`; scripts/bench.sh sets
// PKGFLEET_POLL_BUILDERS=10000, PKGFLEET_POLL_REMOTES=1000 and a 60s
// PKGFLEET_POLL_INTERVAL), half local repositories, half on a loopback
// smart-HTTP server, and checks that every builder is polled without an
// error and that a round lists each remote about once, not once per
// builder. With PKGFLEET_POLL_BEFORE=n it first runs n builders over n/10
// remotes the way polling was before (git ls-remote for each builder),
// for the BENCH line's comparison. Times and CPU are the BENCH line's
// to report, not assertions.
func TestPollingManyBuildersListsEachRemoteOncePerRound(t *testing.T) {
	fleet := pollFleet{builders: envInt("PKGFLEET_POLL_BUILDERS", 200), remotes: envInt("PKGFLEET_POLL_REMOTES", 20),
		interval: time.Duration(envInt("PKGFLEET_POLL_INTERVAL", 4)) * time.Second}
	urls, client, serverCPU := pollRemotes(t, fleet.remotes)
	report := func(f pollFleet, fig pollFigures) {
		mode := "after (shared listings, git ls-remote only as fallback)"
		if f.before {
			mode = "before (git ls-remote per builder)"
		}
		t.Logf("BENCH poller %s: builders=%d remotes=%d (half local, half https) interval=%s first-round=%s steady-round=%s listings/round=%d api-cpu/round=%s (%.3f of one CPU over the interval) api-cpu/builder-poll=%s git-server-cpu/round=%s",
			mode, f.builders, f.remotes, f.interval, fig.firstRound.Round(time.Millisecond), fig.round.Round(time.Millisecond),
			fig.listings, fig.apiCPU.Round(time.Millisecond), fig.apiCPU.Seconds()/max(f.interval, fig.round).Seconds(),
			(fig.apiCPU / time.Duration(f.builders)).Round(time.Microsecond), fig.serverCPU.Round(time.Millisecond))
	}
	if n := envInt("PKGFLEET_POLL_BEFORE", 0); n > 0 {
		before := pollFleet{builders: n, remotes: max(n/10, 2), interval: fleet.interval, before: true}
		spread := make([]string, before.remotes) // local and https alike
		for i := range spread {
			spread[i] = urls[i*len(urls)/len(spread)]
		}
		report(before, runPollFleet(t, before, spread, &git.Client{Policy: client.Policy, Net: client.Net, Env: client.Env, ListWithGit: true}, serverCPU))
	}
	fig := runPollFleet(t, fleet, urls, client, serverCPU)
	report(fleet, fig)
	if fig.listings > int64(2*fleet.remotes) {
		t.Fatalf("%d listings in a round of %d builders over %d remotes: remotes are not shared", fig.listings, fleet.builders, fleet.remotes)
	}
}
