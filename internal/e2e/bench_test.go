package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestBenchRPackageAgainstRCMDBuild times the example R package through
// API → queue → worker → sandbox against `R CMD build` run directly. It
// runs only from scripts/bench.sh (PKGFLEET_BENCH=1).
func TestBenchRPackageAgainstRCMDBuild(t *testing.T) {
	benchRPackage(t, "r-package", func(t *testing.T) string { return versionedRepo(t, "r/hellofleet", "DESCRIPTION") })
}

// TestBenchLargeRPackageAgainstRCMDBuild is the same for a generated
// package of a non-trivial size (largeRPackage: 300 R files, 150 C sources
// with their headers, 100 help pages), where what grows with the
// checkout (clone, copies, walks of the tree) shows.
func TestBenchLargeRPackageAgainstRCMDBuild(t *testing.T) {
	benchRPackage(t, "large-r-package", func(t *testing.T) string { return versionedRepoFrom(t, largeRPackage()) })
}

// benchRPackage builds the package of repo() through the fleet and with
// `R CMD build` on the same commit, one build at a time, a few times each,
// and prints the mean of each and the difference, in wall time and in CPU
// time (this process, which runs the API and the worker, and every process
// it reaped: git, the sandbox, R), which a machine shared with other work
// distorts far less.
func benchRPackage(t *testing.T, what string, repo func(*testing.T) string) {
	if os.Getenv("PKGFLEET_BENCH") == "" {
		t.Skip("a benchmark: scripts/bench.sh runs it")
	}
	testenv.Require(t, "R")
	f := setup(t, nil)
	f.do("POST", "/api/v1/sources", map[string]string{"name": "r", "type": "git"}, 201)
	const runs = 3
	var fleet, direct, fleetCPU, directCPU time.Duration
	for i := range runs {
		dir := repo(t)
		// A remote serves its objects packed; a fresh repository's 700
		// loose objects cost git a second of CPU to pack for each fetch.
		testenv.Git(t, dir, "repack", "-adq")
		name := fmt.Sprintf("pkg%c", 'a'+i)
		f.do("POST", "/api/v1/sources/r/git-builders", map[string]any{"name": name, "url": "file://" + dir}, 201)
		start, cpu := time.Now(), cpuTime()
		b := f.wait(f.run("/api/v1/sources/r/git-builders/"+name+"/run", nil).ID)
		fleet += time.Since(start)
		fleetCPU += cpuTime() - cpu
		if b.Status != registry.StatusSucceeded {
			t.Fatalf("build: %s %s\n%s", b.Status, b.Detail, f.log(b.ID))
		}
		out := t.TempDir()
		cmd := exec.Command("R", "CMD", "build", dir)
		cmd.Dir = out
		start, cpu = time.Now(), cpuTime()
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("R CMD build: %v\n%s", err, o)
		}
		direct += time.Since(start)
		directCPU += cpuTime() - cpu
	}
	ms := func(d time.Duration) time.Duration { return (d / runs).Round(time.Millisecond) }
	t.Logf("BENCH %s runs=%d wall: pkgfleet=%s direct=%s ratio=%.2fx overhead=%s | CPU: pkgfleet=%s direct=%s ratio=%.2fx overhead=%s",
		what, runs, ms(fleet), ms(direct), fleet.Seconds()/direct.Seconds(), ms(fleet-direct),
		ms(fleetCPU), ms(directCPU), fleetCPU.Seconds()/directCPU.Seconds(), ms(fleetCPU-directCPU))
}

// cpuTime is the CPU this process and the children it reaped have used.
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + children.Utime.Nano() + children.Stime.Nano())
}

// largeRPackage is an R package with C code, of the size of a middling
// CRAN package: 300 R files, 150 C files and headers, 100 Rd pages.
func largeRPackage() map[string]string {
	files := map[string]string{
		"DESCRIPTION": "Package: bigfleet\nVersion: 1.0.0\nTitle: A Generated Package\nDescription: Many files, some C.\n" +
			"License: MIT\nAuthor: pkgfleet\nMaintainer: pkgfleet <pkgfleet@example.org>\nEncoding: UTF-8\n",
		"NAMESPACE": "useDynLib(bigfleet, .registration = TRUE)\nexportPattern(\"^f[0-9]+$\")\n",
	}
	for i := range 300 {
		files[fmt.Sprintf("R/f%03d.R", i)] = fmt.Sprintf("#' f%d\nf%d <- function(x) {\n  .Call(\"c%03d\", as.numeric(x))\n}\n", i, i, i%150)
	}
	for i := range 150 {
		files[fmt.Sprintf("src/c%03d.h", i)] = fmt.Sprintf("#include <Rinternals.h>\nSEXP c%03d(SEXP x);\n", i)
		files[fmt.Sprintf("src/c%03d.c", i)] = fmt.Sprintf("#include \"c%03d.h\"\n\nSEXP c%03d(SEXP x) {\n"+
			"  SEXP out = PROTECT(Rf_duplicate(x));\n  double *p = REAL(out);\n"+
			"  for (R_xlen_t i = 0; i < XLENGTH(out); i++) p[i] = p[i] * %d + 1;\n  UNPROTECT(1);\n  return out;\n}\n", i, i, i+1)
	}
	for i := range 100 {
		files[fmt.Sprintf("man/f%03d.Rd", i)] = fmt.Sprintf("\\name{f%d}\n\\alias{f%d}\n\\title{f%d}\n\\usage{f%d(x)}\n"+
			"\\arguments{\\item{x}{a number}}\n\\value{a number}\n\\description{Generated.}\n", i, i, i, i)
	}
	return files
}
