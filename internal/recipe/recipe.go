// Package recipe holds pkgfleet's build recipes: how an R package becomes a
// source tarball (R CMD build) and, when asked, a binary for the worker's
// platform (R CMD INSTALL --build, binary.go), and a Python package an
// sdist and a wheel (python -m build) with its tags, and how the results
// are checked against the package's own metadata.
//
// Every command goes through a sandbox.Runner, so a recipe never knows
// whether it runs sandboxed. Cloning, storing artifacts and retrying are
// the worker's job, not this package's.
package recipe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/detect"
	"github.com/pkgfleet/pkgfleet/internal/pkgmeta"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// Input is one checkout to build.
type Input struct {
	Checkout string    // the clone's root (exposed read-write)
	SubDir   string    // the package's directory inside it ("" = root)
	Dest     string    // empty directory for the results (exposed read-write)
	Log      io.Writer // the build log
	Network  bool      // Git.BuildNetwork
	// Door, when set (and Network is not), is the build's one way out: a
	// proxy at sandbox.DoorAddr to one package index, which the build
	// names IndexURL (internal/door). Python builds then run isolated,
	// their requirements installed from that index.
	Door     sandbox.Door
	IndexURL string
	// BuildVignettes has R CMD build build the vignettes (the builder's
	// build_vignettes); what they need comes through the door.
	BuildVignettes bool
	// Binary has an R build also make the binary package for the worker's
	// platform (binary.go): the builder's binary, else its source's.
	Binary bool
	// Library is a directory of this build only, outside Dest, kept
	// across the build's sandboxed runs, where R packages the build needs
	// are installed (the pipeline makes it in the build's work directory
	// and removes it with it). "": each run makes its own in its TMPDIR.
	Library string
	// SourceDate is the commit's time: SOURCE_DATE_EPOCH, and the time
	// stamped into source tarballs (reproducible.go). Zero: 1980-01-01.
	SourceDate time.Time
	// DeadMan is the sandbox's dead man's switch (sandbox.Spec.DeadMan):
	// the build is killed when the worker stalls this long.
	DeadMan time.Duration
	// Check runs the check stage after a successful build (check.go): R
	// CMD check for R, CheckCommand for Python (none when empty).
	Check        bool
	CheckCommand string
}

// Output is what a successful build made.
type Output struct {
	Package string
	Version string
	// Artifacts are the files made in Input.Dest: File (the name) and
	// Kind ("source", "binary", "sdist" or "wheel") set, with a binary's
	// Platform and RVersion and a wheel's Tags; the store adds the rest.
	Artifacts []registry.Artifact
	// Warnings are what the package's metadata does that its own tools
	// accept but should not be written so (pkgmeta.Metadata.Warnings).
	Warnings []string
	Result   sandbox.Result
	Timing   Timing
	// Check is the check stage's verdict; nil when there was none.
	Check *registry.Check
}

// Failure is a build that ran and failed; Error() is the reason shown on
// the build record: one line, with the remedy where one is known (reason.go).
type Failure struct {
	Reason string
	Result sandbox.Result
}

func (f *Failure) Error() string { return f.Reason }

// Recipe builds one language's packages.
type Recipe interface {
	Build(ctx context.Context, in Input) (*Output, error)
}

// R runs R CMD build.
type R struct {
	Runner sandbox.Runner
	Tool   detect.Tool
}

// Build implements Recipe.
func (r *R) Build(ctx context.Context, in Input) (*Output, error) {
	dir, err := packageDir(in)
	if err != nil {
		return nil, err
	}
	desc, err := pkgmeta.ReadDESCRIPTION(dir)
	if err != nil {
		return nil, &Failure{Reason: err.Error()}
	}
	pkg, version := desc.Fields["Package"], desc.Fields["Version"]
	warn(in.Log, desc.Warnings)
	fmt.Fprintf(in.Log, "==> R CMD build %s (package %s %s, R %s)\n", rel(in, dir), pkg, version, r.Tool.Version)
	why := &reasonWriter{}
	// The PDF manual needs LaTeX; vignettes need their engine and the
	// packages' suggested dependencies, so only build_vignettes builds
	// them (vignettes.go). PPM builds plain source bundles.
	args, env, door := r.rCommand(in, dir, baseEnv(in.Dest, in.SourceDate))
	sw := startStopwatch(io.MultiWriter(in.Log, why))
	res, err := r.Runner.Run(ctx, sandbox.Spec{
		Args:    args,
		Env:     env,
		Door:    door,
		Dir:     in.Dest,
		Source:  in.Checkout,
		Dest:    in.Dest,
		Network: in.Network,
		Output:  sw,
		DeadMan: in.DeadMan,
	})
	sw.stopped()
	if err != nil {
		return nil, err
	}
	if !res.Success() {
		return nil, &Failure{Reason: why.rReason(res, r.Tool.Path), Result: res}
	}
	// One pass over the tarball makes it reproducible and reads its
	// DESCRIPTION for the check.
	tarball := filepath.Join(in.Dest, pkg+"_"+version+".tar.gz")
	epoch := sourceDateEpoch(in.SourceDate)
	built, err := normalizeTarGz(tarball, epoch, pkg+"/DESCRIPTION", fixRPackaged(epoch))
	var bad *badTarballError
	if errors.As(err, &bad) {
		return nil, &Failure{Reason: "R CMD build made no " + filepath.Base(tarball) + ": " + err.Error(), Result: res}
	}
	if err != nil {
		return nil, fmt.Errorf("make %s reproducible: %w", filepath.Base(tarball), err)
	}
	f, err := pkgmeta.ParseDCF(built)
	if err != nil || f["Package"] != pkg || f["Version"] != version {
		return nil, &Failure{Reason: fmt.Sprintf("%s: its DESCRIPTION does not say Package %s Version %s", filepath.Base(tarball), pkg, version), Result: res}
	}
	out := &Output{Package: pkg, Version: version, Artifacts: []registry.Artifact{{File: filepath.Base(tarball), Kind: "source"}},
		Warnings: desc.Warnings, Result: res, Timing: sw.timing()}
	if in.Binary {
		// The binary's run counts as build time: it is the build tool again.
		bw := startStopwatch(in.Log)
		bin, bres, err := r.binary(ctx, in, pkg, version, tarball, bw)
		bw.stopped()
		if err != nil {
			return nil, err
		}
		out.Artifacts = append(out.Artifacts, bin)
		bres.OutputTruncated = bres.OutputTruncated || res.OutputTruncated
		out.Result = bres
		bt := bw.timing()
		out.Timing.Build += bt.SandboxStart + bt.Build
		out.Timing.Checks += bt.Checks
	}
	if in.Check {
		if out.Check, out.Timing.Check, err = r.check(ctx, in, pkg, tarball); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Python runs python -m build.
type Python struct {
	Runner sandbox.Runner
	Tool   detect.Tool
}

// Environments are the environments python -m build --sdist --wheel
// makes, in its order (pipeline.Environments).
func (p *Python) Environments() []string { return []string{"sdist", "wheel"} }

// Build implements Recipe.
func (p *Python) Build(ctx context.Context, in Input) (*Output, error) {
	dir, err := packageDir(in)
	if err != nil {
		return nil, err
	}
	if !exists(filepath.Join(dir, "pyproject.toml")) && !exists(filepath.Join(dir, "setup.py")) {
		return nil, &Failure{Reason: fmt.Sprintf("%s has neither pyproject.toml nor setup.py", rel(in, dir))}
	}
	args := []string{p.Tool.Command(), "-m", "build", "--sdist", "--wheel", "--outdir", in.Dest}
	env := baseEnv(in.Dest, in.SourceDate)
	door := in.Door != nil && !in.Network
	switch {
	case door:
		// Isolated: build-system.requires and what get_requires_for_build_*
		// name are installed into a fresh environment from the index.
		env = append(env, doorEnv(in.IndexURL)...)
		fmt.Fprintf(in.Log, "==> build requirements from %s through the door\n", in.IndexURL)
	case !in.Network:
		// Without a network an isolated build cannot install its backend;
		// use the backends installed with the interpreter.
		args = append(args, "--no-isolation")
	}
	args = append(args, dir)
	fmt.Fprintf(in.Log, "==> python -m build %s (Python %s)\n", rel(in, dir), p.Tool.Version)
	why := &reasonWriter{}
	sw := startStopwatch(io.MultiWriter(in.Log, why))
	spec := sandbox.Spec{
		Args: args, Env: env, Dir: dir, Source: in.Checkout, Dest: in.Dest,
		Network: in.Network, Output: sw, DeadMan: in.DeadMan,
	}
	if door {
		spec.Door = in.Door
	}
	res, err := p.Runner.Run(ctx, spec)
	sw.stopped()
	if err != nil {
		return nil, err
	}
	if !res.Success() {
		return nil, &Failure{Reason: why.pythonReason(res, p.Tool.Command(), dir), Result: res}
	}
	out, err := checkPython(in.Dest, sourceDateEpoch(in.SourceDate), res)
	if err != nil {
		return nil, err
	}
	p.tagWheels(in.Log, out.Artifacts)
	warn(in.Log, out.Warnings)
	out.Timing = sw.timing()
	if in.Check && in.CheckCommand != "" {
		if out.Check, out.Timing.Check, err = p.checkCommand(ctx, in, dir); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// tagWheels records each wheel's tags. A wheel of this machine's own
// platform (linux_<arch>: compiled code, not repaired) also records the
// worker's platform, and the index serves it only under that platform's
// URL. auditwheel, which would repair it to a manylinux tag, is not
// available here (Debian has no package of it, and workers have no PyPI),
// so the wheel keeps its honest tag, and the log says so.
func (p *Python) tagWheels(log io.Writer, arts []registry.Artifact) {
	for i, a := range arts {
		if a.Kind != "wheel" {
			continue
		}
		tags, err := pkgmeta.WheelTags(a.File)
		if err != nil {
			continue // checkPython has read its METADATA: a name python -m build made
		}
		arts[i].Tags = tags
		if pkgmeta.LocalLinuxOnly(tags) {
			arts[i].Platform = p.Tool.Platform
			fmt.Fprintf(log, "==> %s is tagged %s: no auditwheel on this worker to repair it to manylinux, so it keeps its own tag and is served for %s only\n",
				a.File, strings.Join(tags, "."), p.Tool.Platform)
		}
	}
}

// checkPython checks that the build made one sdist and one wheel of the
// same name and version, and makes the sdist reproducible on the way.
func checkPython(dest string, epoch int64, res sandbox.Result) (*Output, error) {
	fail := func(format string, args ...any) error {
		return &Failure{Reason: fmt.Sprintf(format, args...), Result: res}
	}
	sdists, _ := filepath.Glob(filepath.Join(dest, "*.tar.gz"))
	wheels, _ := filepath.Glob(filepath.Join(dest, "*.whl"))
	if len(sdists) != 1 || len(wheels) != 1 {
		return nil, fail("python -m build should make one sdist and one wheel, made %d and %d", len(sdists), len(wheels))
	}
	sdist := filepath.Base(sdists[0])
	base := strings.TrimSuffix(sdist, ".tar.gz")
	// One pass over the sdist makes it reproducible and reads its PKG-INFO.
	pkgInfo, err := normalizeTarGz(sdists[0], epoch, base+"/PKG-INFO", nil)
	var bad *badTarballError
	if errors.As(err, &bad) {
		return nil, fail("sdist: %v", err)
	}
	if err != nil {
		return nil, fmt.Errorf("make %s reproducible: %w", sdist, err)
	}
	sm, err := pkgmeta.ParseCoreMetadata("sdist PKG-INFO", pkgInfo)
	if err != nil {
		return nil, fail("%v", err)
	}
	wheel := filepath.Base(wheels[0])
	meta, err := pkgmeta.ZipMember(wheels[0], ".dist-info/METADATA")
	if err != nil {
		return nil, fail("wheel: %v", err)
	}
	wm, err := pkgmeta.ParseCoreMetadata("wheel METADATA", meta)
	if err != nil {
		return nil, fail("%v", err)
	}
	name, version, err := sm.NameVersion("sdist PKG-INFO")
	if err != nil {
		return nil, fail("%v", err)
	}
	wname, wversion, _ := wm.NameVersion("wheel METADATA")
	if pkgmeta.NormalizeName(wname) != pkgmeta.NormalizeName(name) || wversion != version {
		return nil, fail("sdist says %s %s but wheel says %s %s", name, version, wname, wversion)
	}
	return &Output{Package: name, Version: version, Result: res, Artifacts: []registry.Artifact{
		{File: sdist, Kind: "sdist"}, {File: wheel, Kind: "wheel"},
	}, Warnings: append(sm.Warnings, wm.Warnings...)}, nil
}

// packageDir resolves SubDir inside the checkout without leaving it, even
// through symlinks the repository planted.
func packageDir(in Input) (string, error) {
	dir := filepath.Join(in.Checkout, filepath.FromSlash(in.SubDir))
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", &Failure{Reason: fmt.Sprintf("sub_dir %q not found in the repository", in.SubDir)}
	}
	root, err := filepath.EvalSymlinks(in.Checkout)
	if err != nil {
		return "", err
	}
	if real != root && !strings.HasPrefix(real, root+string(filepath.Separator)) {
		return "", &Failure{Reason: fmt.Sprintf("sub_dir %q leads outside the repository", in.SubDir)}
	}
	if st, err := os.Stat(real); err != nil || !st.IsDir() {
		return "", &Failure{Reason: fmt.Sprintf("sub_dir %q is not a directory", in.SubDir)}
	}
	return real, nil
}

func rel(in Input, dir string) string {
	root, _ := filepath.EvalSymlinks(in.Checkout)
	if r, err := filepath.Rel(root, dir); err == nil {
		return r
	}
	return dir
}

// Env is the environment every build command gets, with HOME at home.
func Env(home string) []string { return baseEnv(home, time.Time{}) }

func baseEnv(home string, sourceDate time.Time) []string {
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=C.UTF-8",
		"HOME=" + home,
		// Builds are reproducible (reproducible.go) and never ask questions.
		sourceDateEnv(sourceDate),
		"PIP_NO_INPUT=1",
		"PIP_DISABLE_PIP_VERSION_CHECK=1",
		"R_BROWSER=false",
	}
}

// doorEnv points pip (and anything else that honours the proxy variables)
// at the door, and pip at the index as the build names it.
func doorEnv(indexURL string) []string {
	host := ""
	if u, err := url.Parse(indexURL); err == nil {
		host = u.Host
	}
	return append(proxyEnv(),
		"PIP_INDEX_URL="+indexURL,
		// No pip.conf of the host (/etc is bound in) adds another index.
		"PIP_CONFIG_FILE=/dev/null",
		// The build reaches an https index as http://HOST:443 on its own
		// loopback; the door speaks TLS to the index and checks it.
		"PIP_TRUSTED_HOST="+host,
		"PIP_NO_CACHE_DIR=1",
		// One retry: a requirement the index lacks is a 404, not a glitch.
		"PIP_RETRIES=1",
	)
}

// proxyEnv sends whatever honours the proxy variables (pip, R's libcurl)
// to the door.
func proxyEnv() []string {
	proxy := "http://" + sandbox.DoorAddr
	return []string{"HTTP_PROXY=" + proxy, "http_proxy=" + proxy, "HTTPS_PROXY=" + proxy, "https_proxy=" + proxy,
		"NO_PROXY=", "no_proxy="}
}

func describe(res sandbox.Result) string {
	switch {
	case res.Killed != "":
		return "was killed: " + res.Killed
	case res.Signal != "":
		return "was killed by " + res.Signal
	default:
		return fmt.Sprintf("exited with status %d", res.ExitCode)
	}
}

// warn writes each warning to the build log as a "==> warning:" line.
func warn(log io.Writer, warnings []string) {
	for _, w := range warnings {
		fmt.Fprintf(log, "==> warning: %s\n", w)
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }
