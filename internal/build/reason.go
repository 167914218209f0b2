package build

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/pkgfleet/pkgfleet/internal/pkgmeta"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// A failed build's record carries one line a maintainer can act on: what
// went wrong and the remedy. The full output stays in the build log; the
// reasonWriter reads it as it streams and keeps only what explains a
// failure, so its memory is bounded whatever the build prints.

// remedyPython is what makes a missing build requirement available to a
// Python build today.
const remedyPython = "install it on the workers (the worker image's EXTRA_PACKAGES), " +
	"or set Git.BuildNetwork = true for isolated builds that download it"

var (
	compilerError = regexp.MustCompile(`^\S+?:\d+(:\d+)?: (fatal )?error: .+`)
	rNoPackage    = regexp.MustCompile(`there is no package called [‘'"]([^’'"]+)[’'"]`)
	rDepsMissing  = regexp.MustCompile(`dependenc(?:y|ies) (.+) (?:is|are) not available`)
	rQuoted       = regexp.MustCompile(`[‘'"]([^’'"]+)[’'"]`)
	rVignetteEng  = regexp.MustCompile(`vignette builder [‘'"]([^’'"]+)[’'"] not found`)
	pyBackend     = regexp.MustCompile(`^ERROR Backend '([^']+)' is not available`)
	pipNotFound   = regexp.MustCompile(`No matching distribution found for (\S+)`)
)

// reasonWriter is an io.Writer over a build's output.
type reasonWriter struct {
	mu        sync.Mutex
	partial   []byte
	tail      []string // the last lines, for a failure no rule names
	compiler  string   // the first compiler error
	backend   string   // PEP 517 backend that would not import
	missing   []string // requirements python -m build found missing
	inMissing bool
	notFound  string   // a requirement the index does not have
	rMissing  []string // R packages the build needed
}

const tailLines = 20

func (w *reasonWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := strings.IndexByte(string(w.partial), '\n')
		if i < 0 {
			break
		}
		w.line(strings.TrimRight(string(w.partial[:i]), "\r"))
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > 4096 { // a line without end: keep its start
		w.line(string(w.partial[:4096]))
		w.partial = w.partial[:0]
	}
	return len(p), nil
}

func (w *reasonWriter) line(l string) {
	if w.inMissing {
		if strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "  ") {
			if len(w.missing) < 20 {
				w.missing = append(w.missing, strings.TrimSpace(l))
			}
			return
		}
		w.inMissing = false
	}
	switch {
	case w.compiler == "" && compilerError.MatchString(l):
		w.compiler = l
	case strings.HasPrefix(l, "ERROR Missing dependencies:"):
		w.inMissing, w.missing = true, nil
	case pyBackend.MatchString(l):
		w.backend = pyBackend.FindStringSubmatch(l)[1]
	case pipNotFound.MatchString(l) && w.notFound == "":
		w.notFound = pipNotFound.FindStringSubmatch(l)[1]
	case rNoPackage.MatchString(l):
		w.addR(rNoPackage.FindStringSubmatch(l)[1])
	case rVignetteEng.MatchString(l):
		w.addR(rVignetteEng.FindStringSubmatch(l)[1])
	case rDepsMissing.MatchString(l):
		for _, m := range rQuoted.FindAllStringSubmatch(rDepsMissing.FindStringSubmatch(l)[1], -1) {
			w.addR(m[1])
		}
	}
	if strings.TrimSpace(l) != "" {
		w.tail = append(w.tail, l)
		if len(w.tail) > tailLines {
			w.tail = w.tail[1:]
		}
	}
}

func (w *reasonWriter) addR(pkg string) {
	for _, p := range w.rMissing {
		if p == pkg {
			return
		}
	}
	if len(w.rMissing) < 20 {
		w.rMissing = append(w.rMissing, pkg)
	}
}

// pythonReason is the one line for a failed python -m build in dir run by
// the interpreter at python.
func (w *reasonWriter) pythonReason(res sandbox.Result, python, dir string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case res.Killed != "" || res.Signal != "":
		return "python -m build " + describe(res)
	case w.backend != "":
		req := backendRequirement(dir, w.backend)
		if req != "" {
			req = " (requires " + req + ")"
		}
		return fmt.Sprintf("build backend %s%s is not installed beside %s: %s", w.backend, req, python, remedyPython)
	case len(w.missing) > 0:
		return fmt.Sprintf("build requirements %s are not installed beside %s: %s", strings.Join(w.missing, ", "), python, remedyPython)
	case w.notFound != "":
		return fmt.Sprintf("build requirement %s is not in the package index the build can reach: publish it there, or %s", w.notFound, remedyPython)
	case w.compiler != "":
		return "compiler error: " + w.compiler
	}
	return "python -m build " + describe(res) + w.lastWords()
}

// rReason is the one line for a failed R CMD build.
func (w *reasonWriter) rReason(res sandbox.Result, rHome string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case res.Killed != "" || res.Signal != "":
		return "R CMD build " + describe(res)
	case len(w.rMissing) > 0:
		return fmt.Sprintf("R packages %s needed by the build are not installed in the R at %s: install them on the workers (the worker image's EXTRA_PACKAGES)",
			strings.Join(w.rMissing, ", "), rHome)
	case w.compiler != "":
		return "compiler error: " + w.compiler
	}
	return "R CMD build " + describe(res) + w.lastWords()
}

// lastWords is ": " and the last line of output that says something, or
// "". The tools end a failure with lines that only say that it failed;
// what the package itself said (a setup.py's sys.exit, R's complaint about
// DESCRIPTION) comes just before them.
func (w *reasonWriter) lastWords() string {
	for i := len(w.tail) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(w.tail[i]); !saysOnlyThatItFailed(l) {
			return ": " + clip(l)
		}
	}
	return ""
}

func saysOnlyThatItFailed(l string) bool {
	for _, p := range []string{"ERROR Backend subprocess exited", "Execution halted", "Traceback (most recent call last)",
		"File \"", "^", "~"} {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return l == ""
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// backendRequirement finds, in dir's pyproject.toml, the build-system
// requirement that provides backend (flit_core.buildapi → flit_core>=3.12).
func backendRequirement(dir, backend string) string {
	data, err := os.ReadFile(filepath.Join(dir, "pyproject.toml"))
	if err != nil || len(data) > 1<<20 {
		return ""
	}
	module := pkgmeta.NormalizeName(strings.SplitN(backend, ".", 2)[0])
	for _, req := range buildRequires(string(data)) {
		name := req
		if i := strings.IndexAny(req, "<>=!~;[ "); i >= 0 {
			name = req[:i]
		}
		if pkgmeta.NormalizeName(name) == module {
			return req
		}
	}
	return ""
}

// buildRequires reads the requires list of [build-system]: enough TOML
// for a failure message, not a TOML parser.
func buildRequires(toml string) []string {
	section := ""
	var list strings.Builder
	inList := false
	for _, line := range strings.Split(toml, "\n") {
		t := strings.TrimSpace(line)
		if inList {
			list.WriteString(t)
			if strings.Contains(t, "]") {
				break
			}
			continue
		}
		if strings.HasPrefix(t, "[") && !strings.HasPrefix(t, "[[") {
			section = strings.Trim(t, "[] ")
			continue
		}
		if section == "build-system" && strings.HasPrefix(t, "requires") {
			_, v, _ := strings.Cut(t, "=")
			list.WriteString(strings.TrimSpace(v))
			if !strings.Contains(v, "]") {
				inList = true
				continue
			}
			break
		}
	}
	var out []string
	for _, m := range regexp.MustCompile(`["']([^"']+)["']`).FindAllStringSubmatch(list.String(), -1) {
		out = append(out, strings.TrimSpace(m[1]))
	}
	return out
}
