//go:build containers

package containertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// compileSuite builds internal/sandbox's tests (go test -c) and their probe
// as static binaries into a directory the worker container can read, as
// scripts/test-sandbox-unprivileged.sh does for the unprivileged pass.
func compileSuite(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dir  string
		args []string
	}{
		{root, []string{"test", "-c", "-o", filepath.Join(dir, "sandbox.test"), "./internal/sandbox/"}},
		{repoPath("internal", "sandbox"), []string{"build", "-o", filepath.Join(dir, "probe"), "./testdata/probe"}},
	} {
		cmd := exec.Command("go", c.args...)
		cmd.Dir = c.dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(c.args, " "), err, out)
		}
	}
	return dir
}

var (
	passedTest  = regexp.MustCompile(`(?m)^\s*--- PASS: `)
	failedTest  = regexp.MustCompile(`(?m)^\s*--- FAIL: .*$`)
	skippedTest = regexp.MustCompile(`(?m)^\s*--- SKIP: .*$`)
	// allowedSkip are the skips the suite allows a non-root run: tests that
	// plant root-owned files in system directories (rootOnly), the helper
	// "tests" that only run as another test's child process, and the two
	// that do not apply to masked-proc by design (a fresh /proc's process
	// count; Landlock ABI 1, which masked-proc refuses).
	allowedSkip = regexp.MustCompile(`(?m)^\s+\S+_test\.go:\d+: (needs root to plant root-owned files|only run as the worker of |masked-proc (shows|refuses) )`)
)

// TestEscapeSuiteHoldsInTheWorkerContainer runs the sandbox's escape suite
// inside the worker container, as its non-root user, under each row in
// which the sandbox works: every attack must be held there too, and with
// CI=true no test may skip but those that must plant root-owned files
// and the helpers that run as another test's child.
func TestEscapeSuiteHoldsInTheWorkerContainer(t *testing.T) {
	requireImages(t, workerImage)
	suite := compileSuite(t)
	for _, r := range rows {
		if !r.working() {
			continue
		}
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			args := append(r.dockerFlags(t),
				"-v", suite+":/suite:ro",
				"--env", "CI=true", "--env", "PKGFLEET_TEST_UNPRIVILEGED=1",
				"--env", "PKGFLEET_SANDBOX_PROBE=/suite/probe", "--env", "TMPDIR=/tmp",
				"--entrypoint", "/suite/sandbox.test", workerImage,
				"-test.count=1", "-test.v", "-test.timeout=15m")
			out, code := runContainer(t, 16*time.Minute, args...)
			if bad := failedTest.FindAllString(out, -1); code != 0 || len(bad) > 0 {
				t.Fatalf("escape suite in tier %s: exit %d, failed:\n%s\n%s", r.tier, code, strings.Join(bad, "\n"), failures(out))
			}
			if skips := skippedTest.FindAllString(out, -1); len(skips) != len(allowedSkip.FindAllString(out, -1)) {
				t.Errorf("escape suite in tier %s skipped more than the root-only and helper tests:\n%s", r.tier, strings.Join(skips, "\n"))
			}
			n := len(passedTest.FindAllString(out, -1))
			if n == 0 {
				t.Fatalf("escape suite in tier %s ran no test:\n%s", r.tier, tail(out, 40))
			}
			t.Logf("escape suite in tier %s: %d tests passed", r.tier, n)
		})
	}
}

// failures is what go test -v printed for each failed test (its log lines
// come before its --- FAIL line), or the output's tail when none failed by
// name (a panic, a timeout).
func failures(out string) string {
	var b strings.Builder
	var block []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "=== RUN") {
			block = block[:0]
		}
		block = append(block, l)
		if failedTest.MatchString(l) {
			b.WriteString(strings.Join(block, "\n") + "\n")
			block = block[:0]
		}
	}
	if b.Len() == 0 {
		return tail(out, 80)
	}
	return b.String()
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
