package recipe

import (
	"bytes"
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
// Python build: an index behind the build's door (internal/door), or the
// workers' own Python.
const remedyPython = "set Git.PythonIndexURL (or the builder's python_index_url) to an index that has it, " +
	"or install it on the workers (the worker image's EXTRA_PACKAGES)"

// remedyR is the same for the packages an R build needs.
const remedyR = "turn on the builder's build_vignettes with Git.RRepositoryURL (or its r_repository_url) " +
	"naming a repository that has them, or install them on the workers (the worker image's EXTRA_PACKAGES)"

var (
	compilerError = regexp.MustCompile(`^\S+?:\d+(:\d+)?: (fatal )?error: .+`)
	rNoPackage    = regexp.MustCompile(`there is no package called [‘'"]([^’'"]+)[’'"]`)
	rDepsMissing  = regexp.MustCompile(`dependenc(?:y|ies) (.+) (?:is|are) not available`)
	rQuoted       = regexp.MustCompile(`[‘'"]([^’'"]+)[’'"]`)
	rVignetteEng  = regexp.MustCompile(`vignette builder [‘'"]([^’'"]+)[’'"] not found`)
	pyBackend     = regexp.MustCompile(`^ERROR Backend '([^']+)' is not available`)
	pipNotFound   = regexp.MustCompile(`No matching distribution found for (\S+)`)
	quotedString  = regexp.MustCompile(`["']([^"']+)["']`)
)

// reasonWriter is an io.Writer over a build's output. It must keep up
// with a build that prints a gigabyte: a line is looked at closely only
// when it holds one of the words the rules below look for.
type reasonWriter struct {
	mu        sync.Mutex
	partial   []byte   // the start of a line not yet ended (at most maxLine)
	tail      []byte   // the last tailBytes of output, for a failure no rule names
	tailCut   bool     // tail starts inside a line
	compiler  string   // the first compiler error
	backend   string   // PEP 517 backend that would not import
	missing   []string // requirements python -m build found missing
	inMissing bool
	notFound  string   // a requirement the index does not have
	rMissing  []string // R packages the build needed
}

const (
	tailBytes = 4096
	maxLine   = 4096
)

// clues are the words some rule needs; a line without any is skipped.
var clues = [][]byte{[]byte("rror"), []byte("ERROR"), []byte("not available"), []byte("no package called"),
	[]byte("No matching distribution"), []byte("vignette builder")}

func (w *reasonWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	w.tail = append(w.tail, p[max(0, len(p)-tailBytes):]...)
	w.tailCut = w.tailCut || len(p) > tailBytes
	if len(w.tail) > 2*tailBytes {
		w.tail, w.tailCut = append([]byte(nil), w.tail[len(w.tail)-tailBytes:]...), true
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p[:min(len(p), maxLine-len(w.partial))]...)
			break
		}
		line := p[:i]
		if len(w.partial) > 0 {
			line = append(w.partial, line[:min(len(line), maxLine-len(w.partial))]...)
			w.partial = nil
		}
		w.line(bytes.TrimRight(line, "\r"))
		p = p[i+1:]
	}
	return n, nil
}

func (w *reasonWriter) line(b []byte) {
	if w.inMissing {
		if bytes.HasPrefix(b, []byte("\t")) || bytes.HasPrefix(b, []byte("  ")) {
			if len(w.missing) < 20 {
				w.missing = append(w.missing, string(bytes.TrimSpace(b)))
			}
			return
		}
		w.inMissing = false
	}
	interesting := false
	for _, c := range clues {
		if bytes.Contains(b, c) {
			interesting = true
			break
		}
	}
	if !interesting {
		return
	}
	l := string(b)
	switch {
	case w.compiler == "" && compilerError.MatchString(l):
		w.compiler = clip(l)
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
		return fmt.Sprintf("build requirement %s is not in the package index the build can reach: publish it there, "+
			"or set Git.PythonIndexURL (or the builder's python_index_url) to an index that has it", w.notFound)
	case w.compiler != "":
		return "compiler error: " + w.compiler
	}
	return "python -m build " + describe(res) + w.lastWords()
}

// rReason is the one line for a failed R CMD build.
func (w *reasonWriter) rReason(res sandbox.Result, rHome string) string {
	return w.rReasonOf("R CMD build", res, rHome)
}

// rReasonOf is the one line for a failed R command (R CMD build, R CMD
// INSTALL --build).
func (w *reasonWriter) rReasonOf(command string, res sandbox.Result, rHome string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case res.Killed != "" || res.Signal != "":
		return command + " " + describe(res)
	case len(w.rMissing) > 0:
		return fmt.Sprintf("R packages %s needed by the build are not installed in the R at %s: %s",
			strings.Join(w.rMissing, ", "), rHome, remedyR)
	case w.compiler != "":
		return "compiler error: " + w.compiler
	}
	return command + " " + describe(res) + w.lastWords()
}

// lastWords is ": " and the last line of output that says something, or
// "". The tools end a failure with lines that only say that it failed;
// what the package itself said (a setup.py's sys.exit, R's complaint about
// DESCRIPTION) comes just before them.
func (w *reasonWriter) lastWords() string {
	lines := strings.Split(string(w.tail), "\n")
	if w.tailCut {
		lines = lines[1:]
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); !saysOnlyThatItFailed(l) {
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
	for _, m := range quotedString.FindAllStringSubmatch(list.String(), -1) {
		out = append(out, strings.TrimSpace(m[1]))
	}
	return out
}
