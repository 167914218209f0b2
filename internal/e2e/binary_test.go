package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/detect"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// A source with binary: true builds R binaries for the worker's platform:
// the generated package with C code, whose Imports (hellofleet) the fleet
// itself built into the same source and its build installs through the
// door, is installed with plain install.packages() from the __linux__
// URL by an R that has no compiler on its PATH, as binaries, and loads.
// An R of another version is offered the sources only, as it is by R
// 4.6's layout.
func TestRBinaryInstallsWithoutACompilerFromTheLinuxRepository(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "Rscript")
	platform, err := detect.Platform("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	f := setup(t, testenv.AllowLoopback(map[string]string{})) // the door leads to the fleet's own repository
	if out, errs, code := f.pkgfleet("create", "source", "--name", "rbin", "--binary", "-o", "json"); code != 0 || !strings.Contains(out, `"binary": true`) {
		t.Fatalf("create source --binary: %d %s %s", code, out, errs)
	}
	cran := f.api.URL + "/cran/rbin"
	f.do("POST", "/api/v1/sources/rbin/git-builders", map[string]any{"url": "file://" + versionedRepo(t, "r/hellofleet")}, 201)
	f.mustSucceed(f.run("/api/v1/sources/rbin/git-builders/hellofleet/run", nil))
	// A builder's own binary: false wins over its source's default.
	f.do("POST", "/api/v1/sources/rbin/git-builders", map[string]any{"name": "plain", "url": "file://" + versionedRepo(t, "r/hellofleet"), "binary": false}, 201)
	plain := f.mustSucceed(f.run("/api/v1/sources/rbin/git-builders/plain/run", nil))
	if len(plain.Artifacts) != 1 || plain.Artifacts[0].Kind != "source" {
		t.Fatalf("binary: false built %+v", plain.Artifacts)
	}

	files := cRPackage("cfleet", 4, 2, 1)
	files["DESCRIPTION"] += "Imports: hellofleet\n"
	files["NAMESPACE"] += "export(greet)\n"
	files["R/greet.R"] = "greet <- function() hellofleet::hello(\"binary\")\n"
	f.do("POST", "/api/v1/sources/rbin/git-builders", map[string]any{"url": "file://" + versionedRepoFrom(t, files), "r_repository_url": cran}, 201)
	b := f.mustSucceed(f.run("/api/v1/sources/rbin/git-builders/cfleet/run", nil))
	log := f.log(b.ID)

	rversion := f.wkr.Info().Languages["r"].Version
	if p := f.wkr.Info().Languages["r"].Platform; p != platform {
		t.Fatalf("the worker reports platform %q, want %q", p, platform)
	}
	rxy := rversion[:strings.LastIndex(rversion, ".")]
	var bin registry.Artifact
	for _, a := range b.Artifacts {
		if a.Kind == "binary" {
			bin = a
		}
	}
	if bin.File != "cfleet_1.0.0_R_x86_64-pc-linux-gnu.tar.gz" || bin.Platform != platform || bin.RVersion != rxy ||
		!strings.Contains(log, "==> R CMD INSTALL --build") {
		t.Fatalf("binary artifact %+v, want R's own name for %s, R %s\n%s", bin, platform, rxy, log)
	}
	// The dependency came through the door: the very tarball the fleet
	// built and serves (of the newest build of hellofleet 0.1.0, plain's).
	if len(b.Fetched) != 1 || b.Fetched[0].Name != "hellofleet" || b.Fetched[0].SHA256 != plain.Artifacts[0].SHA256 {
		t.Fatalf("fetched %+v, want hellofleet with sha256 %s\n%s", b.Fetched, plain.Artifacts[0].SHA256, log)
	}
	// The source repository is as it was: source tarballs, no Built.
	if p := string(f.do("GET", "/cran/rbin/src/contrib/PACKAGES", nil, 200)); strings.Contains(p, "Built:") || !strings.Contains(p, "Package: cfleet") {
		t.Fatalf("source PACKAGES:\n%s", p)
	}

	// The builds page shows the binary and its install line.
	if page := string(f.do("GET", "/", nil, 200)); !strings.Contains(page, "Binaries for "+platform) || !strings.Contains(page, "/cran/rbin/__linux__/"+platform+"/latest") {
		t.Fatalf("the builds page lacks the binary install line")
	}
	if page := string(f.do("GET", fmt.Sprintf("/builds/%d", b.ID), nil, 200)); !strings.Contains(page, "binary for "+platform+", R "+rxy) {
		t.Fatalf("the build's page lacks the binary")
	}

	// Plain install.packages() from the __linux__ URL, no compiler on PATH.
	linux := cran + "/__linux__/" + platform + "/latest"
	// R 4.2's libcurl downloads send no User-Agent unless the option is
	// set in the session: the line PPM's documentation gives for Linux.
	lib, lib46 := t.TempDir(), t.TempDir()
	script := `options(HTTPUserAgent = sprintf("R/%s R (%s)", getRversion(), paste(getRversion(), R.version["platform"], R.version["arch"], R.version["os"])))
cat("gcc:", Sys.which("gcc"), "cc:", Sys.which("cc"), "\n")
t0 <- Sys.time()
install.packages("cfleet", repos = "` + linux + `", lib = "` + lib + `")
cat("install seconds:", format(as.numeric(Sys.time() - t0, units = "secs")), "\n")
library(cfleet, lib.loc = "` + lib + `")
cat("f0:", f0(2), "greet:", greet(), "\n")
cat("built:", packageDescription("cfleet", lib.loc = "` + lib + `")$Built, "\n")
# R 4.6's layout, which names the R x.y in the path, with R 4.2's own means
# (hellofleet, in lib, is not installed again).
install.packages("cfleet", contriburl = "` + cran + `/bin/linux/` + platform + `/contrib/` + rxy + `", lib = "` + lib46 + `")
cat("4.6 layout:", packageDescription("cfleet", lib.loc = "` + lib46 + `")$Built, "\n")`
	cmd := exec.Command("Rscript", "-e", script)
	cmd.Env = append(os.Environ(), "PATH="+pathWithoutCompilers(t), "R_LIBS_USER="+lib)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("R: %v\n%s", err, out)
	}
	o := string(out)
	if !strings.Contains(o, "gcc:  cc:  \n") || strings.Count(o, "installing *binary* package") != 3 || !strings.Contains(o, "4.6 layout: R "+rversion) ||
		!strings.Contains(o, "f0: 3 greet: Hello, binary!") || !strings.Contains(o, "built: R "+rversion) {
		t.Fatalf("R did not install and load the binaries without a compiler:\n%s", o)
	}
	for _, l := range strings.Split(o, "\n") {
		if strings.HasPrefix(l, "install seconds:") {
			t.Logf("BENCH binary-install %s", l) // a figure, not an assertion
		}
	}

	// Another R version asks: the sources, never this binary.
	other := "R (9.8.1 x86_64-pc-linux-gnu x86_64 linux-gnu)"
	if p := get(t, linux+"/src/contrib/PACKAGES", other); strings.Contains(p, "Built:") || !strings.Contains(p, "Package: cfleet") {
		t.Fatalf("PACKAGES for R 9.8:\n%s", p)
	}
	source, _ := artifactKind(b, "source")
	if sum := sha(get(t, linux+"/src/contrib/cfleet_1.0.0.tar.gz", other)); sum != source.SHA256 {
		t.Fatalf("R 9.8 was served sha256 %s, not the source tarball's %s", sum, source.SHA256)
	}
	mine := "R (" + rversion + " x86_64-pc-linux-gnu x86_64 linux-gnu)"
	if sum := sha(get(t, linux+"/src/contrib/cfleet_1.0.0.tar.gz", mine)); sum != bin.SHA256 {
		t.Fatalf("R %s was served sha256 %s, not the binary's %s", rversion, sum, bin.SHA256)
	}
	// R 4.6's layout: binaries only, for the R x.y of the path.
	if p := get(t, cran+"/bin/linux/"+platform+"/contrib/"+rxy+"/PACKAGES", ""); !strings.Contains(p, "Package: cfleet") || !strings.Contains(p, "Built: R "+rversion) {
		t.Fatalf("bin/linux PACKAGES for R %s:\n%s", rxy, p)
	}
	if p := get(t, cran+"/bin/linux/"+platform+"/contrib/9.8/PACKAGES", ""); p != "" {
		t.Fatalf("bin/linux PACKAGES for R 9.8 lists:\n%s", p)
	}
	if p := get(t, cran+"/bin/linux/other-1/contrib/"+rxy+"/PACKAGES", ""); p != "" {
		t.Fatalf("bin/linux PACKAGES of another platform lists:\n%s", p)
	}
}

func artifactKind(b *registry.Build, kind string) (registry.Artifact, bool) {
	for _, a := range b.Artifacts {
		if a.Kind == kind {
			return a, true
		}
	}
	return registry.Artifact{}, false
}

// get fetches url as a client with userAgent would, and fails the test
// unless it answers 200.
func get(t *testing.T, url, userAgent string) string {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, body)
	}
	return string(body)
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// pathWithoutCompilers is a PATH of one directory with every program of
// /usr/bin and /bin but the C compilers, the assembler and the linker: an
// R that installs with it cannot have compiled anything (R's Makeconf
// calls gcc by name).
func pathWithoutCompilers(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, from := range []string{"/usr/bin", "/bin"} {
		entries, err := os.ReadDir(from)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			n := e.Name()
			if n == "cc" || n == "c++" || n == "cpp" || n == "as" || n == "ld" || strings.HasPrefix(n, "ld.") ||
				strings.Contains(n, "gcc") || strings.Contains(n, "g++") || strings.Contains(n, "clang") ||
				strings.HasSuffix(n, "-ld") || strings.HasSuffix(n, "-as") || strings.HasPrefix(n, "cpp-") {
				continue
			}
			_ = os.Symlink(filepath.Join(from, n), filepath.Join(dir, n)) // /bin and /usr/bin may be one
		}
	}
	return dir
}

// TestBenchRBinaryInstallAgainstSource times install.packages() of the
// generated package with C code (largeRPackage) from the source's
// __linux__ repository, as a binary, against from its source repository,
// compiling, in the same run; and what binary: true costs a build of it
// (the build phase with and without). It runs only from scripts/bench.sh
// (PKGFLEET_BENCH=1).
func TestBenchRBinaryInstallAgainstSource(t *testing.T) {
	if os.Getenv("PKGFLEET_BENCH") == "" {
		t.Skip("a benchmark: scripts/bench.sh runs it")
	}
	platform, err := detect.Platform("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	f := setup(t, nil)
	f.do("POST", "/api/v1/sources", map[string]any{"name": "bench", "type": "git"}, 201)
	buildMS := map[bool]float64{}
	var bin *registry.Build
	for _, binary := range []bool{false, true} {
		name := fmt.Sprintf("binary-%v", binary)
		f.do("POST", "/api/v1/sources/bench/git-builders", map[string]any{"name": name, "url": "file://" + versionedRepoFrom(t, largeRPackage()), "binary": binary}, 201)
		b := f.mustSucceed(f.run("/api/v1/sources/bench/git-builders/"+name+"/run", nil))
		for _, p := range b.Phases {
			if p.Phase == registry.PhaseBuild {
				buildMS[binary] = p.MS
			}
		}
		bin = b
	}
	if _, ok := artifactKind(bin, "binary"); !ok {
		t.Fatalf("no binary: %+v", bin.Artifacts)
	}
	const runs = 3
	install := func(repos string) time.Duration {
		var total time.Duration
		for range runs {
			lib := t.TempDir()
			script := `options(HTTPUserAgent = sprintf("R/%s R (%s)", getRversion(), paste(getRversion(), R.version["platform"], R.version["arch"], R.version["os"])))
install.packages("bigfleet", repos = "` + repos + `", lib = "` + lib + `", quiet = TRUE)
library(bigfleet, lib.loc = "` + lib + `")`
			start := time.Now()
			if out, err := exec.Command("Rscript", "-e", script).CombinedOutput(); err != nil {
				t.Fatalf("install from %s: %v\n%s", repos, err, out)
			}
			total += time.Since(start)
		}
		return (total / runs).Round(time.Millisecond)
	}
	cran := f.api.URL + "/cran/bench"
	fromBinary := install(cran + "/__linux__/" + platform + "/latest")
	fromSource := install(cran)
	t.Logf("BENCH r-binary-install runs=%d install.packages(bigfleet): binary=%s source=%s ratio=%.1fx | build phase: binary=false %.0fms binary=true %.0fms (+%.0fms per build)",
		runs, fromBinary, fromSource, fromSource.Seconds()/fromBinary.Seconds(), buildMS[false], buildMS[true], buildMS[true]-buildMS[false])
}
