// Package detect finds the R and Python that builds use, the way PPM does:
// the configured one (Server.RVersion, Server.PythonVersion), else PPM's
// well-known locations, and proves each candidate works by running it
// through the same runner builds use — inside the sandbox when there is
// one. It prints PPM's log lines so that a PPM admin recognises them.
//
// It does not decide what a worker consumes; the worker does, from what
// detect returns.
package detect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/version"
)

// Tool is a usable interpreter.
type Tool struct {
	Language string // "r" or "python"
	Version  string // e.g. "4.4.1", "3.11.2"
	Path     string // R: the installation directory (R_HOME); Python: the interpreter
	// Platform is the worker's distribution as os-release names it,
	// ID-VERSION_ID ("debian-12"): what an R binary built with this tool
	// is for. Empty when /etc/os-release does not say.
	Platform string
}

// Minor is the version's x.y ("4.2" of "4.2.2"): an R binary package
// works with every R of the same x.y.
func (t Tool) Minor() string {
	parts := strings.SplitN(t.Version, ".", 3)
	if len(parts) < 2 {
		return t.Version
	}
	return parts[0] + "." + parts[1]
}

// Command is the program to run for this tool: R's bin/R or the Python
// interpreter.
func (t Tool) Command() string {
	if t.Language == "r" {
		return filepath.Join(t.Path, "bin", "R")
	}
	return t.Path
}

// Detector probes candidates through Runner.
type Detector struct {
	Runner  sandbox.Runner
	Log     *slog.Logger
	TempDir string // where probe work dirs are made
	// Roots overrides the scanned locations (tests); nil means PPM's.
	RRoots      []string
	RSystem     []string
	PythonRoots []string
	PathEnv     string // PATH to scan; "" means $PATH
	// OSRelease is the os-release file naming the platform; "" means
	// /etc/os-release, which the sandbox binds in as it is.
	OSRelease string
}

// ErrUnusable is returned when no candidate could be run.
var ErrUnusable = errors.New("not usable on this system")

var (
	defaultRRoots      = []string{"/opt/R", "/opt/local/R"}
	defaultRSystem     = []string{"/usr/lib/R", "/usr/lib64/R", "/usr/local/lib/R", "/usr/local/lib64/R", "/opt/local/lib/R", "/opt/local/lib64/R"}
	defaultPythonRoots = []string{"/opt/python"}
)

func (d *Detector) where() string {
	if d.Runner.Mode() == "user-namespace" {
		return "in a user namespace sandbox."
	}
	return "without a sandbox (Git.AllowUnsandboxedGitBuilds)."
}

// R finds R: configured is Server.RVersion ("" = scan).
func (d *Detector) R(ctx context.Context, configured string) (Tool, error) {
	d.Log.Info("Attempting to detect R version " + d.where())
	var candidates []string
	if configured != "" {
		candidates = []string{configured}
	} else {
		candidates = d.rCandidates()
	}
	best, err := d.newest(ctx, "r", candidates)
	if err != nil {
		d.Log.Warn("Warning: Unable to use R on this system. Building Git packages for R will be disabled.", "reason", err.Error())
		return Tool{}, err
	}
	d.Log.Info(fmt.Sprintf("Detected R version %s at %s", best.Version, best.Path))
	best.Platform = d.platform()
	return best, nil
}

// Python finds Python with the build module: configured is
// Server.PythonVersion ("" = scan).
func (d *Detector) Python(ctx context.Context, configured string) (Tool, error) {
	d.Log.Info("Attempting to detect Python version " + d.where())
	var candidates []string
	if configured != "" {
		candidates = []string{configured}
	} else {
		candidates = d.pythonCandidates()
	}
	var best Tool
	var err error
	if configured == "" {
		// /opt/python installs: newest wins; then the first usable python on PATH.
		best, err = d.newest(ctx, "python", d.optPythons())
		if err != nil {
			best, err = d.first(ctx, "python", d.pathPythons())
		}
	} else {
		best, err = d.newest(ctx, "python", candidates)
	}
	if err != nil {
		d.Log.Warn("Warning: Unable to use Python on this system. Building Git packages for Python will be disabled.", "reason", err.Error())
		return Tool{}, err
	}
	d.Log.Info(fmt.Sprintf("Detected Python version %s at %s", best.Version, best.Path))
	best.Platform = d.platform()
	return best, nil
}

func (d *Detector) rCandidates() []string {
	roots, system := d.RRoots, d.RSystem
	if roots == nil {
		roots = defaultRRoots
	}
	if system == nil {
		system = defaultRSystem
	}
	var out []string
	for _, root := range roots {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			out = append(out, filepath.Join(root, e.Name()))
		}
	}
	out = append(out, system...)
	var found []string
	for _, c := range out {
		if isExecutable(filepath.Join(c, "bin", "R")) {
			found = append(found, c)
		}
	}
	if len(found) > 0 {
		return found
	}
	// PATH is scanned only when nothing else was found, as PPM does.
	for _, dir := range filepath.SplitList(d.path()) {
		r := filepath.Join(dir, "R")
		if !isExecutable(r) {
			continue
		}
		if real, err := filepath.EvalSymlinks(r); err == nil {
			// /usr/bin/R → R_HOME is usually ../lib/R; ask R itself.
			found = append(found, "path:"+real)
		}
	}
	return found
}

func (d *Detector) optPythons() []string {
	roots := d.PythonRoots
	if roots == nil {
		roots = defaultPythonRoots
	}
	var out []string
	for _, root := range roots {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			for _, name := range []string{"python3", "python"} {
				p := filepath.Join(root, e.Name(), "bin", name)
				if isExecutable(p) {
					out = append(out, p)
					break
				}
			}
		}
	}
	return out
}

func (d *Detector) pathPythons() []string {
	var out []string
	for _, dir := range filepath.SplitList(d.path()) {
		for _, name := range []string{"python3", "python"} {
			p := filepath.Join(dir, name)
			if isExecutable(p) {
				out = append(out, p)
			}
		}
	}
	return out
}

func (d *Detector) pythonCandidates() []string {
	return append(d.optPythons(), d.pathPythons()...)
}

func (d *Detector) path() string {
	if d.PathEnv != "" {
		return d.PathEnv
	}
	return os.Getenv("PATH")
}

func (d *Detector) newest(ctx context.Context, lang string, candidates []string) (Tool, error) {
	var ok []Tool
	var errs []error
	for _, c := range candidates {
		t, err := d.probe(ctx, lang, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ok = append(ok, t)
	}
	if len(ok) == 0 {
		if len(errs) == 0 {
			return Tool{}, fmt.Errorf("%s: no installation found", ErrUnusable)
		}
		return Tool{}, fmt.Errorf("%w: %w", ErrUnusable, errors.Join(errs...))
	}
	sort.SliceStable(ok, func(i, j int) bool { return version.Compare(ok[i].Version, ok[j].Version) > 0 })
	return ok[0], nil
}

func (d *Detector) first(ctx context.Context, lang string, candidates []string) (Tool, error) {
	var errs []error
	for _, c := range candidates {
		t, err := d.probe(ctx, lang, c)
		if err == nil {
			return t, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return Tool{}, fmt.Errorf("%w: no installation found", ErrUnusable)
	}
	return Tool{}, fmt.Errorf("%w: %w", ErrUnusable, errors.Join(errs...))
}

// probe runs the candidate through the runner and reads its version.
func (d *Detector) probe(ctx context.Context, lang, candidate string) (Tool, error) {
	var args []string
	switch lang {
	case "r":
		cmd := filepath.Join(candidate, "bin", "R")
		if p, ok := strings.CutPrefix(candidate, "path:"); ok {
			cmd = p
		}
		args = []string{cmd, "--vanilla", "--slave", "-e", `cat(as.character(getRversion()), R.home(), sep = "\n")`}
	case "python":
		args = []string{candidate, "-c", "import sys, build; print(sys.version.split()[0]); print(sys.executable)"}
	}
	dir, err := os.MkdirTemp(d.TempDir, "pkgfleet-probe-")
	if err != nil {
		return Tool{}, fmt.Errorf("probe %s: %w", candidate, err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o777); err != nil { // the run-as user writes here
		return Tool{}, err
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	res, err := d.Runner.Run(ctx, sandbox.Spec{
		Args: args, Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + dir},
		Dir: dir, Source: dir, Dest: dir, Output: &out,
		Limits: sandbox.Limits{Timeout: 60 * time.Second, Output: 64 << 10},
	})
	if err != nil {
		return Tool{}, fmt.Errorf("probe %s: %w", candidate, err)
	}
	if !res.Success() {
		return Tool{}, fmt.Errorf("probe %s: exit %d %s%s: %s", candidate, res.ExitCode, res.Signal, res.Killed, lastLine(out.String()))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 2 {
		return Tool{}, fmt.Errorf("probe %s: unexpected output %q", candidate, out.String())
	}
	version, path := strings.TrimSpace(lines[len(lines)-2]), strings.TrimSpace(lines[len(lines)-1])
	if lang == "python" && strings.HasPrefix(candidate, "/") {
		path = candidate // keep the configured or scanned path, not a resolved venv target
	}
	if lang == "r" && !strings.HasPrefix(candidate, "path:") {
		path = candidate
	}
	return Tool{Language: lang, Version: version, Path: path}, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// platform reads ID-VERSION_ID from os-release ("debian-12", "ubuntu-24.04").
func (d *Detector) platform() string {
	file := d.OSRelease
	if file == "" {
		file = "/etc/os-release"
	}
	p, err := Platform(file)
	if err != nil {
		d.Log.Warn("the platform is unknown: R binary packages will not be built", "error", err)
	}
	return p
}

// Platform returns ID-VERSION_ID of the os-release file ("debian-12"),
// the name under which R binaries built here are served. A rolling
// distribution with no VERSION_ID is named by its ID alone.
func Platform(osRelease string) (string, error) {
	b, err := os.ReadFile(osRelease)
	if err != nil {
		return "", fmt.Errorf("platform: %w", err)
	}
	var id, ver string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			id = v
		case "VERSION_ID":
			ver = v
		}
	}
	if id == "" || strings.ContainsAny(id+ver, "/ ") {
		return "", fmt.Errorf("platform: %s names no usable ID", osRelease)
	}
	if ver == "" {
		return id, nil
	}
	return id + "-" + ver, nil
}
