package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/pkgfleet/pkgfleet/internal/worker"
)

// TestBenchRPackageAgainstRCMDBuild times the example R package through
// API → queue → worker → sandbox against `R CMD build` run directly. It
// runs only from scripts/bench.sh (PKGFLEET_BENCH=1).
func TestBenchRPackageAgainstRCMDBuild(t *testing.T) {
	benchPackage(t, rBench("r-package", func(t *testing.T) string { return versionedRepo(t, "r/hellofleet", "DESCRIPTION") }))
}

// TestBenchLargeRPackageAgainstRCMDBuild is the same for a generated
// package of a non-trivial size (largeRPackage: 300 R files, 150 C sources
// with their headers, 100 help pages), where what grows with the
// checkout (clone, copies, walks of the tree) shows.
func TestBenchLargeRPackageAgainstRCMDBuild(t *testing.T) {
	benchPackage(t, rBench("large-r-package", func(t *testing.T) string { return versionedRepoFrom(t, largeRPackage()) }))
}

// TestBenchPythonPackageAgainstPythonBuild times the example Python
// package through the fleet against `python -m build` run directly with
// the interpreter the worker detected, as the recipe runs it (sdist and
// wheel, no isolation: a build without Git.BuildNetwork has no index).
func TestBenchPythonPackageAgainstPythonBuild(t *testing.T) {
	benchPackage(t, pythonBench("python-package", func(t *testing.T) string {
		return versionedRepo(t, "python/hellofleet-py", "pyproject.toml", "src/hellofleet_py/__init__.py")
	}))
}

// TestBenchLargePythonPackageAgainstPythonBuild is the same for a
// generated package of 300 modules in 10 subpackages with package data
// (largePythonPackage).
func TestBenchLargePythonPackageAgainstPythonBuild(t *testing.T) {
	benchPackage(t, pythonBench("large-python-package", func(t *testing.T) string { return versionedRepoFrom(t, largePythonPackage()) }))
}

// benchCase is one package benchmark: a repository of the package and the
// bare toolchain's command for the same checkout.
type benchCase struct {
	what       string
	sourceType string // registry.TypeGit or TypeGitPython
	language   string // the worker's name for the toolchain: "r" or "python"
	repo       func(*testing.T) string
	// direct is the bare tool's command line for the package in dir,
	// writing into out, with the worker's toolchain at tool (R_HOME or
	// the interpreter).
	direct func(tool, dir, out string) []string
}

func rBench(what string, repo func(*testing.T) string) benchCase {
	return benchCase{what: what, sourceType: registry.TypeGit, language: registry.LangR, repo: repo,
		direct: func(tool, dir, _ string) []string {
			return []string{tool + "/bin/R", "CMD", "build", "--no-build-vignettes", "--no-manual", dir}
		}}
}

func pythonBench(what string, repo func(*testing.T) string) benchCase {
	return benchCase{what: what, sourceType: registry.TypeGitPython, language: registry.LangPython, repo: repo,
		direct: func(tool, dir, out string) []string {
			return []string{tool, "-m", "build", "--sdist", "--wheel", "--outdir", out, "--no-isolation", dir}
		}}
}

// benchPackage builds the package of c.repo() through the fleet and with
// the bare tool on the same commit, one build at a time, a few times each,
// and prints the mean of each and the difference, in wall time and in CPU
// time (this process, which runs the API and the worker, and every process
// it reaped: git, the sandbox, the tool), which a machine shared with other
// work distorts far less, and the mean of each phase of the fleet's builds.
func benchPackage(t *testing.T, c benchCase) {
	if os.Getenv("PKGFLEET_BENCH") == "" {
		t.Skip("a benchmark: scripts/bench.sh runs it")
	}
	// The worker's own task-check intervals, not the tests' shorter ones.
	f := setup(t, nil, func(o *worker.Options) { o.TaskCheckInterval, o.DelayedTaskCheckInterval = 0, 0 })
	tool := f.wkr.Info().Languages[c.language]
	if tool.Path == "" {
		t.Fatalf("the worker cannot build %s packages", c.language)
	}
	f.do("POST", "/api/v1/sources", map[string]string{"name": "bench", "type": c.sourceType}, 201)
	const runs = 3
	var fleet, direct, fleetCPU, directCPU time.Duration
	phases := map[string]float64{}
	for i := range runs {
		dir := c.repo(t)
		// A remote serves its objects packed; a fresh repository's 700
		// loose objects cost git a second of CPU to pack for each fetch.
		testenv.Git(t, dir, "repack", "-adq")
		name := fmt.Sprintf("pkg%c", 'a'+i)
		f.do("POST", "/api/v1/sources/bench/git-builders", map[string]any{"name": name, "url": "file://" + dir}, 201)
		start, cpu := time.Now(), cpuTime()
		b := f.wait(f.run("/api/v1/sources/bench/git-builders/"+name+"/run", nil).ID)
		fleet += time.Since(start)
		fleetCPU += cpuTime() - cpu
		if b.Status != registry.StatusSucceeded {
			t.Fatalf("build: %s %s\n%s", b.Status, b.Detail, f.log(b.ID))
		}
		for _, p := range b.Phases {
			phases[p.Phase] += p.MS / runs
		}
		out := t.TempDir()
		args := c.direct(tool.Path, dir, out)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = out
		start, cpu = time.Now(), cpuTime()
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, o)
		}
		direct += time.Since(start)
		directCPU += cpuTime() - cpu
	}
	ms := func(d time.Duration) time.Duration { return (d / runs).Round(time.Millisecond) }
	var split []string
	for _, p := range apiv1.PhaseOrder {
		if v, ok := phases[p]; ok {
			split = append(split, fmt.Sprintf("%s=%.0fms", p, v))
		}
	}
	t.Logf("BENCH %s runs=%d wall: pkgfleet=%s direct=%s ratio=%.2fx overhead=%s | CPU: pkgfleet=%s direct=%s ratio=%.2fx overhead=%s | phases: %s",
		c.what, runs, ms(fleet), ms(direct), fleet.Seconds()/direct.Seconds(), ms(fleet-direct),
		ms(fleetCPU), ms(directCPU), fleetCPU.Seconds()/directCPU.Seconds(), ms(fleetCPU-directCPU), strings.Join(split, " "))
}

// cpuTime is the CPU this process, the children it reaped and its live
// children (the sandbox's launcher, which reaps the builds) have used;
// not the tests' Redis.
func cpuTime() time.Duration { return testenv.TreeCPU("redis-server") }

// largeRPackage is an R package with C code, of the size of a middling
// CRAN package: 300 R files, 150 C files and headers, 100 Rd pages.
func largeRPackage() map[string]string { return cRPackage("bigfleet", 300, 150, 100) }

// cRPackage generates the R package name with C code: nR R files calling
// nC C functions (each with its header), and nRd help pages.
func cRPackage(name string, nR, nC, nRd int) map[string]string {
	files := map[string]string{
		"DESCRIPTION": "Package: " + name + "\nVersion: 1.0.0\nTitle: A Generated Package\nDescription: Many files, some C.\n" +
			"License: MIT\nAuthor: pkgfleet\nMaintainer: pkgfleet <pkgfleet@example.org>\nEncoding: UTF-8\n",
		"NAMESPACE": "useDynLib(" + name + ", .registration = TRUE)\nexportPattern(\"^f[0-9]+$\")\n",
	}
	for i := range nR {
		files[fmt.Sprintf("R/f%03d.R", i)] = fmt.Sprintf("#' f%d\nf%d <- function(x) {\n  .Call(\"c%03d\", as.numeric(x))\n}\n", i, i, i%nC)
	}
	for i := range nC {
		files[fmt.Sprintf("src/c%03d.h", i)] = fmt.Sprintf("#include <Rinternals.h>\nSEXP c%03d(SEXP x);\n", i)
		files[fmt.Sprintf("src/c%03d.c", i)] = fmt.Sprintf("#include \"c%03d.h\"\n\nSEXP c%03d(SEXP x) {\n"+
			"  SEXP out = PROTECT(Rf_duplicate(x));\n  double *p = REAL(out);\n"+
			"  for (R_xlen_t i = 0; i < XLENGTH(out); i++) p[i] = p[i] * %d + 1;\n  UNPROTECT(1);\n  return out;\n}\n", i, i, i+1)
	}
	for i := range nRd {
		files[fmt.Sprintf("man/f%03d.Rd", i)] = fmt.Sprintf("\\name{f%d}\n\\alias{f%d}\n\\title{f%d}\n\\usage{f%d(x)}\n"+
			"\\arguments{\\item{x}{a number}}\n\\value{a number}\n\\description{Generated.}\n", i, i, i, i)
	}
	return files
}

// largePythonPackage is a setuptools package of a middling size: 300
// modules in 10 subpackages, a data file in each, and a C-free build.
func largePythonPackage() map[string]string {
	files := map[string]string{
		"pyproject.toml": "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\n" +
			"[project]\nname = \"bigfleet-py\"\nversion = \"1.0.0\"\ndescription = \"A generated package\"\n" +
			"requires-python = \">=3.8\"\nlicense = {text = \"MIT\"}\n\n" +
			"[tool.setuptools.packages.find]\nwhere = [\"src\"]\n\n[tool.setuptools.package-data]\n\"*\" = [\"*.json\"]\n",
		"README.md":                   "# bigfleet-py\n\nGenerated.\n",
		"src/bigfleet_py/__init__.py": "\"\"\"A generated package.\"\"\"\n",
	}
	for p := range 10 {
		pkg := fmt.Sprintf("src/bigfleet_py/sub%02d/", p)
		files[pkg+"__init__.py"] = fmt.Sprintf("\"\"\"Subpackage %d.\"\"\"\n", p)
		files[pkg+"data.json"] = fmt.Sprintf("{\"sub\": %d}\n", p)
		for m := range 30 {
			files[pkg+fmt.Sprintf("m%02d.py", m)] = fmt.Sprintf("\"\"\"Module %d.%d.\"\"\"\n\n\ndef f%d(x):\n    return x * %d + 1\n", p, m, m, p*30+m)
		}
	}
	return files
}

// TestBenchRCheckCost is what check: true costs an R build: the example
// package built through the fleet without and with the check stage, and,
// as the anchor, R CMD check --no-manual --as-cran run directly on the
// fleet's tarball with the same settings (check.go's rCheckEnv). It runs
// only from scripts/bench.sh (PKGFLEET_BENCH=1).
func TestBenchRCheckCost(t *testing.T) {
	if os.Getenv("PKGFLEET_BENCH") == "" {
		t.Skip("a benchmark: scripts/bench.sh runs it")
	}
	f := setup(t, nil, func(o *worker.Options) { o.TaskCheckInterval, o.DelayedTaskCheckInterval = 0, 0 })
	tool := f.wkr.Info().Languages[registry.LangR]
	f.do("POST", "/api/v1/sources", map[string]string{"name": "bench", "type": registry.TypeGit}, 201)
	const runs = 2
	var plain, checked, phase, direct, plainCPU, checkedCPU, directCPU time.Duration
	for i := range runs {
		for _, check := range []bool{false, true} {
			name := fmt.Sprintf("plain%d", i)
			if check {
				name = fmt.Sprintf("checked%d", i)
			}
			f.do("POST", "/api/v1/sources/bench/git-builders", map[string]any{"name": name, "check": check,
				"url": "file://" + versionedRepo(t, "r/hellofleet", "DESCRIPTION")}, 201)
			start, cpu := time.Now(), cpuTime()
			b := f.mustSucceed(f.run("/api/v1/sources/bench/git-builders/"+name+"/run", nil))
			if !check {
				plain += time.Since(start)
				plainCPU += cpuTime() - cpu
				continue
			}
			checked += time.Since(start)
			checkedCPU += cpuTime() - cpu
			for _, p := range b.Phases {
				if p.Phase == registry.PhaseCheck {
					phase += time.Duration(p.MS * float64(time.Millisecond))
				}
			}
			cmd := exec.Command(tool.Path+"/bin/R", "CMD", "check", "--no-manual", "--as-cran", f.artifact(b.ID, b.Artifacts[0].File))
			cmd.Dir = t.TempDir()
			cmd.Env = append(os.Environ(), "_R_CHECK_CRAN_INCOMING_REMOTE_=false", "_R_CHECK_SYSTEM_CLOCK_=false", "_R_CHECK_FORCE_SUGGESTS_=false")
			start, cpu = time.Now(), cpuTime()
			if out, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(out), "Status: ") {
				t.Fatalf("R CMD check: %v\n%s", err, out)
			}
			direct += time.Since(start)
			directCPU += cpuTime() - cpu
		}
	}
	ms := func(d time.Duration) time.Duration { return (d / runs).Round(time.Millisecond) }
	t.Logf("BENCH r-check runs=%d wall per build: without check=%s with check=%s added=%s (check phase %s) vs R CMD check direct=%s | CPU: without=%s with=%s added=%s vs direct=%s",
		runs, ms(plain), ms(checked), ms(checked-plain), ms(phase), ms(direct), ms(plainCPU), ms(checkedCPU), ms(checkedCPU-plainCPU), ms(directCPU))
}
