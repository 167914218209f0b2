//go:build containers

package containertest

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// ownProfile is the project's seccomp profile (Docker's default plus what
// the sandbox needs), relative to the repository root.
const ownProfile = "deploy/profiles/pkgfleet-worker.json"

// A row is one way to run the worker container: the settings docs/sandbox.md
// lists under "Measured in Docker", and the tier the worker must report
// under them. Every row shares workerFlags; a row adds its seccomp,
// AppArmor and /proc settings. A new row is one more line here.
type row struct {
	name     string   // as docs/sandbox.md names it
	security []string // --security-opt values beyond no-new-privileges
	tier     string   // what `sandbox check` must report: full, masked-proc or none
	// refusal: for tier none, words the refusal must contain: the
	// settings that would fix it, not only the error of the step that failed.
	refusal []string
	// needs is a repository file the row uses; its absence fails the row
	// under CI=true and skips it elsewhere.
	needs string
}

var rows = []row{
	{name: "Docker's defaults", tier: "none", refusal: []string{"seccomp profile", "--security-opt seccomp="}},
	{name: "PPM's settings", security: []string{"seccomp=unconfined", "apparmor=unconfined"}, tier: "masked-proc"},
	{name: "PPM's settings + systempaths=unconfined", security: []string{"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"}, tier: "full"},
	{name: "own seccomp profile", security: []string{"seccomp=" + ownProfile}, tier: "masked-proc", needs: ownProfile},
}

// workerFlags are the docker run options every row shares: the worker as
// the chart and compose run it (uid 10001, no capabilities, no privilege
// gain, read-only root) and no network; writable tmpfs where the worker
// writes. /tmp allows exec: builds run scripts from their TMPDIR.
var workerFlags = []string{
	"--user", "10001:10001", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
	"--read-only", "--network", "none",
	"--tmpfs", "/tmp:rw,exec,nosuid,nodev,mode=1777",
	"--tmpfs", "/var/lib/pkgfleet:rw,nosuid,nodev,uid=10001,gid=10001,mode=0750",
	"--tmpfs", "/var/run/pkgfleet:rw,nosuid,nodev,uid=10001,gid=10001,mode=0750",
	// No config file: the built-in defaults, which match these paths.
	"--env", "PKGFLEET_CONFIG=",
}

// dockerFlags are the docker run options of r: workerFlags plus its
// --security-opt values, with repository paths made absolute.
func (r row) dockerFlags(t testing.TB) []string {
	t.Helper()
	if r.needs != "" {
		if _, err := os.Stat(repoPath(r.needs)); err != nil {
			missing(t, "row %q needs %s: %v", r.name, r.needs, err)
		}
	}
	flags := slices.Clone(workerFlags)
	for _, s := range r.security {
		if p, ok := strings.CutPrefix(s, "seccomp="); ok && p != "unconfined" {
			s = "seccomp=" + repoPath(p)
		}
		flags = append(flags, "--security-opt", s)
	}
	return flags
}

func (r row) working() bool { return r.tier != "none" }

var tierLine = regexp.MustCompile(`(?m)^sandbox tier: (\S+)`)

// TestWorkerContainerTierUnderEachRow runs `sandbox check` in the worker
// container under each row and checks the tier it reports; in a working
// tier the example R and Python packages must build in the sandbox.
func TestWorkerContainerTierUnderEachRow(t *testing.T) {
	requireImages(t, workerImage)
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			flags := r.dockerFlags(t)
			out, code := runContainer(t, 3*time.Minute, append(flags, workerImage, "sandbox", "check")...)
			m := tierLine.FindStringSubmatch(out)
			if m == nil || m[1] != r.tier {
				t.Fatalf("sandbox check (exit %d) reports no \"sandbox tier: %s\" line:\n%s", code, r.tier, out)
			}
			if !r.working() {
				if code == 0 {
					t.Errorf("sandbox check exits 0 where no tier works:\n%s", out)
				}
				for _, w := range r.refusal {
					if !strings.Contains(out, w) {
						t.Errorf("the refusal does not name %q:\n%s", w, out)
					}
				}
				return
			}
			if code != 0 {
				t.Fatalf("sandbox check exit %d in tier %s:\n%s", code, r.tier, out)
			}
			buildExamples(t, flags)
		})
	}
}

// buildExamples builds both example packages in the worker container's
// sandbox (`sandbox exec`, the way a build runs) and checks the artifacts.
func buildExamples(t *testing.T, flags []string) {
	t.Helper()
	script := `set -e
cp -r /examples/r/hellofleet /tmp/r-src && cp -r /examples/python/hellofleet-py /tmp/py-src
mkdir /tmp/r-dest /tmp/py-dest
pkgfleet-worker sandbox exec --source /tmp/r-src --dest /tmp/r-dest -- R CMD build --no-build-vignettes --no-manual /tmp/r-src
pkgfleet-worker sandbox exec --source /tmp/py-src --dest /tmp/py-dest -- python3 -m build --no-isolation --sdist --wheel --outdir /tmp/py-dest /tmp/py-src
echo "artifacts:" /tmp/r-dest/* /tmp/py-dest/*
`
	args := append(slices.Clone(flags), "-v", repoPath("examples")+":/examples:ro", "--entrypoint", "/bin/sh", workerImage, "-c", script)
	out, code := runContainer(t, 5*time.Minute, args...)
	if code != 0 {
		t.Fatalf("building the examples in the sandbox: exit %d\n%s", code, out)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`/tmp/r-dest/hellofleet_[0-9.]+\.tar\.gz`),
		regexp.MustCompile(`/tmp/py-dest/hellofleet[-_]py-[0-9.]+\.tar\.gz`),
		regexp.MustCompile(`/tmp/py-dest/hellofleet_py-[0-9.]+-py3-none-any\.whl`),
	} {
		if !want.MatchString(out) {
			t.Errorf("no artifact matching %s:\n%s", want, out)
		}
	}
}

// rowNamed finds a row of the table by name.
func rowNamed(t testing.TB, name string) row {
	t.Helper()
	for _, r := range rows {
		if r.name == name {
			return r
		}
	}
	t.Fatalf("no row %q in the table", name)
	return row{}
}

// TestDocsTableIsTheRowsTable keeps docs/sandbox.md's "Measured in Docker"
// table the table above: each row named by its subtest, with its tier.
func TestDocsTableIsTheRowsTable(t *testing.T) {
	doc := string(mustRead(t, repoPath("docs", "sandbox.md")))
	_, section, ok := strings.Cut(doc, "\n## Measured in Docker\n")
	if !ok {
		t.Fatal(`docs/sandbox.md has no "## Measured in Docker" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var lines []string
	for _, l := range strings.Split(section, "\n") {
		if strings.HasPrefix(l, "| ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != len(rows)+1 {
		t.Errorf("the table has %d rows, the test %d", len(lines)-1, len(rows))
	}
	for _, r := range rows {
		sub := "`" + strings.ReplaceAll(r.name, " ", "_") + "`"
		i := slices.IndexFunc(lines, func(l string) bool { return strings.HasSuffix(l, "| "+sub+" |") })
		if i < 0 {
			t.Errorf("no table row ends in %s", sub)
			continue
		}
		cells := strings.Split(lines[i], " | ")
		if len(cells) < 2 || !strings.HasPrefix(cells[1], r.tier) {
			t.Errorf("the table gives row %s tier %q, the test measures %s", sub, cells[1], r.tier)
		}
		for _, s := range r.security {
			if !strings.Contains(lines[i], s) && !strings.Contains(cells[0], "the same plus") {
				t.Errorf("the table's row %s does not name %s", sub, s)
			}
		}
	}
}
