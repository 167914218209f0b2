package poller

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestManyBuildersAreAllPolled creates n builders of a local repository
// (100 in `go test`, PKGFLEET_POLL_BUILDERS from scripts/bench.sh) and
// checks that one poller polls every one of them without an error and
// queues nothing. How long that took against the poll interval, and the
// cost per builder, is the BENCH line's to report, not an assertion: on a
// loaded machine the first round may well take longer than one interval.
func TestManyBuildersAreAllPolled(t *testing.T) {
	t.Parallel()
	n := 100
	if v, err := strconv.Atoi(os.Getenv("PKGFLEET_POLL_BUILDERS")); err == nil && v > 0 {
		n = v
	}
	const interval = 10 * time.Second
	e := setup(t)
	repo, _ := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: p\nVersion: 1.0\n"})
	for i := range n {
		// A tag builder whose pattern matches nothing: the poll is all
		// there is, no build is queued.
		e.builder(registry.Builder{Name: fmt.Sprintf("b%04d", i), URL: "file://" + repo,
			BuildTrigger: registry.TriggerTags, TagPattern: "never-*"})
	}
	p, rdb := e.poller("P")
	p.Interval, p.Concurrency = interval, 8
	var self0, kids0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self0)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids0)
	start := time.Now()
	e.start(p, rdb)
	testenv.Eventually(t, 2*time.Minute, fmt.Sprintf("all %d builders polled", n), func() bool {
		st, err := Statuses(context.Background(), e.rdb)
		if err != nil {
			return false
		}
		polled := 0
		for _, s := range st {
			if s.LastPollAt != nil && s.LastError == "" {
				polled++
			}
		}
		return polled == n
	})
	took := time.Since(start)
	var self1, kids1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self1)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids1)
	cpu := func(a, b syscall.Rusage) time.Duration {
		return time.Duration(b.Utime.Nano() + b.Stime.Nano() - a.Utime.Nano() - a.Stime.Nano())
	}
	poller, git := cpu(self0, self1), cpu(kids0, kids1)
	t.Logf("BENCH poller builders=%d all-polled-in=%s (interval %s, within=%t) wall/builder=%s poller-cpu/builder=%s git-cpu/builder=%s",
		n, took.Round(time.Millisecond), interval, took <= interval, (took / time.Duration(n)).Round(time.Microsecond),
		(poller / time.Duration(n)).Round(time.Microsecond), (git / time.Duration(n)).Round(time.Microsecond))
	if b := e.builds("b0000"); len(b) != 0 {
		t.Fatalf("builds queued: %v", b)
	}
}
