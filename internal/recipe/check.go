package recipe

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// The check stage (a builder's check: true): after a successful build, a
// sandboxed run of its own, with the build's door and limits, checks what
// was built; R CMD check --no-manual --as-cran for R, the builder's
// check_command for Python. It says a verdict (Output.Check); whether the
// verdict holds the build back (check_gates) is the pipeline's decision.
//
// The check runs the package's own code (examples, tests), so it never
// sees the build's results directory: it works in a scratch directory of
// its own beside it, with a copy of the tarball, and the artifacts it
// vouches for cannot change under it.

// checkR installs the package's dependencies through the door, then runs
// R CMD check (deps.R, then check.R).
//
//go:embed check.R
var checkR string

var checkScript = depsScript + "\n" + checkR

// rCheckEnv turns off what --as-cran would fetch from the internet, which
// a sandbox reaches only through its door to one package repository (R
// Internals, "Tools"): the remote part of the CRAN incoming checks (CRAN's
// package database and the package's URLs) and the clock's comparison
// with worldtimeapi.org. A Suggests the repository lacks is a NOTE, not an
// ERROR (_R_CHECK_FORCE_SUGGESTS_), as the repository is the builder's,
// not CRAN.
var rCheckEnv = []string{
	"_R_CHECK_CRAN_INCOMING_REMOTE_=false",
	"_R_CHECK_SYSTEM_CLOCK_=false",
	"_R_CHECK_FORCE_SUGGESTS_=false",
}

// check runs R CMD check on tarball (in in.Dest) of package pkg.
func (r *R) check(ctx context.Context, in Input, pkg, tarball string) (*registry.Check, time.Duration, error) {
	began := time.Now()
	scratch, err := newCheckDir(in)
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(scratch)
	file := filepath.Base(tarball)
	if err := copyFile(tarball, filepath.Join(scratch, file)); err != nil {
		return nil, 0, fmt.Errorf("check: copy %s: %w", file, err)
	}
	lib := in.Library
	if lib == "" {
		lib = filepath.Join(scratch, "library")
	}
	env := append(baseEnv(scratch, in.SourceDate), rCheckEnv...)
	env = append(env, "PKGFLEET_R_LIBRARY="+lib)
	spec := sandbox.Spec{
		Args: []string{filepath.Join(r.Tool.Path, "bin", "Rscript"), "-e", checkScript, file, pkg},
		Dir:  scratch, Source: in.Library, Dest: scratch, Network: in.Network, DeadMan: in.DeadMan,
	}
	if in.Door != nil && !in.Network {
		fmt.Fprintf(in.Log, "==> R CMD check --no-manual --as-cran %s; its dependencies come from %s through the door\n", file, in.IndexURL)
		env = append(env, proxyEnv()...)
		env = append(env, "PKGFLEET_R_REPOSITORY="+in.IndexURL)
		spec.Door = in.Door
	} else {
		// No door: no Git.RRepositoryURL (or the builder's), or the host
		// network, where nothing names a repository either.
		fmt.Fprintf(in.Log, "==> R CMD check --no-manual --as-cran %s, with the R packages installed on the worker (no R repository behind a door)\n", file)
	}
	spec.Env = env
	tail := &tailWriter{max: 256 << 10}
	spec.Output = io.MultiWriter(in.Log, tail)
	res, err := r.Runner.Run(ctx, spec)
	if err != nil {
		return nil, 0, err
	}
	// 00check.log is what R CMD check printed, whole even when the
	// build's output limit cut the log.
	out, err := os.ReadFile(filepath.Join(scratch, pkg+".Rcheck", "00check.log"))
	if err != nil {
		out = tail.bytes()
	}
	c := ParseRCheck(string(out))
	if !res.Success() && c.Verdict == registry.CheckFailed || res.Killed != "" || res.Signal != "" {
		c = &registry.Check{Verdict: registry.CheckFailed, Summary: "R CMD check " + describe(res)}
	}
	logVerdict(in.Log, c)
	return c, time.Since(began), nil
}

// checkCommand runs a Python builder's check_command in the package's
// directory dir of the checkout, with the package importable from it
// (PYTHONPATH: dir/src, dir) and the build's door to its index.
func (p *Python) checkCommand(ctx context.Context, in Input, dir string) (*registry.Check, time.Duration, error) {
	began := time.Now()
	scratch, err := newCheckDir(in)
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(scratch)
	env := append(baseEnv(scratch, in.SourceDate), "PYTHONPATH="+filepath.Join(dir, "src")+":"+dir, "PYTHONDONTWRITEBYTECODE=1")
	spec := sandbox.Spec{
		Args: []string{"/bin/sh", "-c", in.CheckCommand},
		Dir:  dir, Source: in.Checkout, Dest: scratch, Network: in.Network, DeadMan: in.DeadMan,
	}
	if in.Door != nil && !in.Network {
		env = append(env, doorEnv(in.IndexURL)...)
		spec.Door = in.Door
	}
	spec.Env = env
	fmt.Fprintf(in.Log, "==> check: %s (in %s)\n", in.CheckCommand, rel(in, dir))
	tail := &tailWriter{max: 4 << 10}
	spec.Output = io.MultiWriter(in.Log, tail)
	res, err := p.Runner.Run(ctx, spec)
	if err != nil {
		return nil, 0, err
	}
	c := &registry.Check{Verdict: registry.CheckOK, Summary: in.CheckCommand + " passed"}
	switch {
	case res.Killed != "" || res.Signal != "":
		c = &registry.Check{Verdict: registry.CheckFailed, Summary: in.CheckCommand + " " + describe(res)}
	case !res.Success():
		c = &registry.Check{Verdict: registry.CheckError, Errors: 1, Summary: in.CheckCommand + " " + describe(res)}
	}
	if last := lastLine(tail.bytes()); last != "" {
		c.Summary += ": " + last
	}
	logVerdict(in.Log, c)
	return c, time.Since(began), nil
}

// newCheckDir makes the check's scratch directory beside in.Dest, in the
// build's own work directory.
func newCheckDir(in Input) (string, error) {
	dir, err := os.MkdirTemp(filepath.Dir(in.Dest), "check-")
	if err != nil {
		return "", fmt.Errorf("check: %w", err)
	}
	// The sandbox's build user must reach it, as it does Dest.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("check: %w", err)
	}
	return dir, nil
}

func logVerdict(log io.Writer, c *registry.Check) {
	fmt.Fprintf(log, "==> check verdict: %s (%s)\n", c.Verdict, c.Summary)
}

var (
	// R CMD check's last words: "Status: OK", "Status: 1 ERROR, 2 NOTEs".
	statusRE = regexp.MustCompile(`(?m)^Status: (.+?)\s*$`)
	countRE  = regexp.MustCompile(`^(\d+) (ERROR|WARNING|NOTE)s?$`)
	// One step's verdict: "* checking for missing documentation entries ... WARNING".
	stepRE = regexp.MustCompile(`(?m)^\* (.+?) \.\.\. ?(ERROR|WARNING|NOTE)\s*$`)
)

// ParseRCheck reads the verdict from R CMD check's output or its
// 00check.log: the counts from the Status line, the worst of them as the
// verdict, and the first step that earned the worst in the summary. An
// output without a Status line is a check that did not end (failed).
func ParseRCheck(out string) *registry.Check {
	m := statusRE.FindAllStringSubmatch(out, -1)
	if m == nil {
		return &registry.Check{Verdict: registry.CheckFailed, Summary: "R CMD check ended without its Status line"}
	}
	status := m[len(m)-1][1]
	c := &registry.Check{Verdict: registry.CheckOK}
	if status != "OK" {
		for _, part := range strings.Split(status, ", ") {
			n := countRE.FindStringSubmatch(part)
			if n == nil {
				return &registry.Check{Verdict: registry.CheckFailed, Summary: "R CMD check: unreadable Status line: " + oneLineOf(status)}
			}
			count, err := strconv.Atoi(n[1])
			if err != nil || count > 1<<20 {
				return &registry.Check{Verdict: registry.CheckFailed, Summary: "R CMD check: unreadable Status line: " + oneLineOf(status)}
			}
			switch n[2] {
			case "ERROR":
				c.Errors += count
			case "WARNING":
				c.Warnings += count
			case "NOTE":
				c.Notes += count
			}
		}
	}
	switch {
	case c.Errors > 0:
		c.Verdict = registry.CheckError
	case c.Warnings > 0:
		c.Verdict = registry.CheckWarning
	case c.Notes > 0:
		c.Verdict = registry.CheckNote
	}
	c.Summary = "R CMD check: " + status
	if c.Verdict != registry.CheckOK {
		for _, s := range stepRE.FindAllStringSubmatch(out, -1) {
			if s[2] == c.Verdict {
				c.Summary += "; " + oneLineOf(s[1]) + " ... " + s[2]
				break
			}
		}
	}
	return c
}

func oneLineOf(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + " …"
	}
	return s
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return oneLineOf(lines[len(lines)-1])
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	max int
	mu  sync.Mutex
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailWriter) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}
