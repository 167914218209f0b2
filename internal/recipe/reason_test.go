package recipe

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/detect"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// Real python -m build failures, each made to fail one way, give one line
// that names the cause and the remedy; the log keeps the rest.
func TestPythonFailureReasonsAreOneLineWithTheRemedy(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "python3", "gcc")
	python := "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import build, setuptools").Run(); err != nil {
		t.Fatalf("python3 with build and setuptools is required: %v", err)
	}
	p := &Python{Runner: sandbox.NewDirect(sandbox.Config{TempDir: t.TempDir()}),
		Tool: detect.Tool{Language: "python", Path: python}}
	for _, tc := range []struct {
		dir  string
		want []string
	}{
		{"nobackend", []string{"build backend pkgfleet_no_such_backend.buildapi (requires pkgfleet-no-such-backend>=3.12,<4) is not installed beside /usr/bin/python3: set Git.PythonIndexURL"}},
		// python -m build lists them in no fixed order.
		{"norequires", []string{"build requirements pkgfleet-no-such-", "pkgfleet-no-such-plugin", "pkgfleet-no-such-readme", "are not installed beside /usr/bin/python3", "Git.PythonIndexURL"}},
		{"ccerror", []string{"compiler error: c.c:1:11: error: expected declaration specifiers"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			t.Parallel()
			checkout := filepath.Join(t.TempDir(), "src")
			if err := os.CopyFS(checkout, os.DirFS(filepath.Join("testdata", "failures", tc.dir))); err != nil {
				t.Fatal(err)
			}
			var log strings.Builder
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, err := p.Build(ctx, Input{Checkout: checkout, Dest: t.TempDir(), Log: &log,
				Limits: sandbox.Limits{Timeout: time.Minute, Output: 1 << 20}})
			f, ok := err.(*Failure)
			if !ok {
				t.Fatalf("Build: %v, want a build failure\n%s", err, log.String())
			}
			if strings.Contains(f.Reason, "\n") {
				t.Errorf("reason has more than one line: %q", f.Reason)
			}
			for _, w := range tc.want {
				if !strings.Contains(f.Reason, w) {
					t.Errorf("reason %q lacks %q", f.Reason, w)
				}
			}
		})
	}
}

// Lines R and pip print, as they print them: R's quotes are typographic
// in a UTF-8 locale.
func TestReasonsFromRAndPipOutput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		lang, out, want string
	}{
		{"r", "* creating vignettes ... ERROR\nError in loadVignetteBuilder(pkgdir, TRUE) : \n  vignette builder 'knitr' not found\nExecution halted\n",
			"R packages knitr needed by the build are not installed in the R at /usr/lib/R"},
		{"r", "ERROR: dependencies ‘glue’, ‘cli’ are not available for package ‘demo’\n* removing ‘/tmp/Rtmp/demo’\n",
			"R packages glue, cli needed by the build"},
		{"r", "Error in library(rmarkdown) : there is no package called ‘rmarkdown’\nExecution halted\n",
			"R packages rmarkdown needed"},
		{"r", "* checking DESCRIPTION meta-information ... ERROR\nMalformed Title field: should not end in a period.\n",
			"R CMD build exited with status 1: Malformed Title field: should not end in a period."},
		{"python", "ERROR: Could not find a version that satisfies the requirement hatchling>=1.26 (from versions: none)\nERROR: No matching distribution found for hatchling>=1.26\n",
			"build requirement hatchling>=1.26 is not in the package index the build can reach"},
		{"python", "Traceback (most recent call last):\n  File \"setup.py\", line 3\nmasked: nothing visible\n\nERROR Backend subprocess exited when trying to invoke get_requires_for_build_sdist\n",
			"python -m build exited with status 1: masked: nothing visible"},
	} {
		w := &reasonWriter{}
		_, _ = io.WriteString(w, tc.out)
		res := sandbox.Result{ExitCode: 1}
		got := w.rReason(res, "/usr/lib/R")
		if tc.lang == "python" {
			got = w.pythonReason(res, "/usr/bin/python3", t.TempDir())
		}
		if !strings.Contains(got, tc.want) || strings.Contains(got, "\n") {
			t.Errorf("%s output %q:\nreason %q\nwant   %q", tc.lang, tc.out, got, tc.want)
		}
	}
	// A limit reads as before: the limit, nothing else.
	w := &reasonWriter{}
	_, _ = io.WriteString(w, "ERROR Backend 'x' is not available.\n")
	if got := w.pythonReason(sandbox.Result{ExitCode: -1, Killed: "memory limit 2GiB"}, "/usr/bin/python3", ""); got != "python -m build was killed: memory limit 2GiB" {
		t.Errorf("limit reason = %q", got)
	}
}
