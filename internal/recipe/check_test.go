package recipe

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/detect"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

func TestRCheckVerdictIsTheWorstOfItsStatusLine(t *testing.T) {
	t.Parallel()
	// A real 00check.log: R 4.2's check of examples/r/hellofleet, whose
	// exported hello() has no documentation.
	real, err := os.ReadFile("testdata/hellofleet-00check.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, out string
		want      registry.Check
	}{
		{"real log", string(real), registry.Check{Verdict: "WARNING", Warnings: 2, Notes: 1,
			Summary: "R CMD check: 2 WARNINGs, 1 NOTE; checking for missing documentation entries ... WARNING"}},
		{"ok", "* checking examples ... OK\n* DONE\n\nStatus: OK\n", registry.Check{Verdict: "OK", Summary: "R CMD check: OK"}},
		{"notes only", "* checking CRAN incoming feasibility ... NOTE\nMaintainer: x\n* DONE\nStatus: 2 NOTEs\n",
			registry.Check{Verdict: "NOTE", Notes: 2, Summary: "R CMD check: 2 NOTEs; checking CRAN incoming feasibility ... NOTE"}},
		{"error", "* checking whether package ‘p’ can be installed ... ERROR\nInstallation failed.\n* DONE\n\nStatus: 1 ERROR, 1 WARNING, 3 NOTEs\n",
			registry.Check{Verdict: "ERROR", Errors: 1, Warnings: 1, Notes: 3, Summary: "R CMD check: 1 ERROR, 1 WARNING, 3 NOTEs; checking whether package ‘p’ can be installed ... ERROR"}},
		{"cut before the end", "* checking examples ... OK\n* checking tests ...\n", registry.Check{Verdict: "failed", Summary: "R CMD check ended without its Status line"}},
		{"unreadable status", "Status: 2 WARNINGS and more\n", registry.Check{Verdict: "failed", Summary: "R CMD check: unreadable Status line: 2 WARNINGS and more"}},
	} {
		if got := ParseRCheck(tc.out); *got != tc.want {
			t.Errorf("%s: ParseRCheck = %+v, want %+v", tc.name, *got, tc.want)
		}
	}
}

func TestTheCheckGatesOnWarningErrorOrFailedButNotOnNote(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{"OK": false, "NOTE": false, "WARNING": true, "ERROR": true, "failed": true} {
		if got := (&registry.Check{Verdict: v}).Gates(); got != want {
			t.Errorf("Gates() of %s = %v, want %v", v, got, want)
		}
	}
	if (*registry.Check)(nil).Gates() {
		t.Error("no check gates")
	}
}

func FuzzParseRCheck(f *testing.F) {
	f.Add("Status: OK\n")
	f.Add("* checking x ... WARNING\nStatus: 1 WARNING, 2 NOTEs\n")
	f.Add("Status: 99999999999999999999 ERRORs\n")
	f.Fuzz(func(t *testing.T, out string) {
		c := ParseRCheck(out)
		switch {
		case c.Verdict == "failed":
		case c.Errors > 0 && c.Verdict != "ERROR",
			c.Errors == 0 && c.Warnings > 0 && c.Verdict != "WARNING",
			c.Errors+c.Warnings == 0 && c.Notes > 0 && c.Verdict != "NOTE",
			c.Errors+c.Warnings+c.Notes == 0 && c.Verdict != "OK":
			t.Fatalf("verdict %s does not match its counts %+v", c.Verdict, c)
		}
		if strings.Contains(c.Summary, "\n") {
			t.Fatalf("summary is not one line: %q", c.Summary)
		}
	})
}

// killedRunner is a runner whose command is always killed by a limit, and
// which records what it was asked to expose.
type killedRunner struct{ spec sandbox.Spec }

func (k *killedRunner) Mode() string { return "unsandboxed" }

func (k *killedRunner) Run(_ context.Context, spec sandbox.Spec) (sandbox.Result, error) {
	k.spec = spec
	io.WriteString(spec.Output, "* checking tests ...\n")
	return sandbox.Result{ExitCode: -1, Killed: "timeout 1h0m0s"}, nil
}

// A check that a limit ended is "failed", whatever it printed before, and
// it never had the build's results directory, only a copy of the tarball.
func TestACheckEndedByALimitIsFailedAndNeverSeesTheResults(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	dest, lib := filepath.Join(work, "out"), filepath.Join(work, "library")
	os.Mkdir(dest, 0o755)
	os.Mkdir(lib, 0o755)
	tarball := filepath.Join(dest, "p_1.0.tar.gz")
	os.WriteFile(tarball, []byte("tarball"), 0o644)
	k := &killedRunner{}
	r := &R{Runner: k, Tool: detect.Tool{Path: "/usr/lib/R"}}
	c, _, err := r.check(context.Background(), Input{Dest: dest, Library: lib, Log: io.Discard}, "p", tarball)
	if err != nil || c.Verdict != registry.CheckFailed || c.Summary != "R CMD check was killed: timeout 1h0m0s" {
		t.Fatalf("check = %+v, %v; want failed, killed by the timeout", c, err)
	}
	if k.spec.Dest == dest || k.spec.Source != lib || filepath.Dir(k.spec.Dest) != work || k.spec.Dir != k.spec.Dest {
		t.Fatalf("the check ran with Source %q, Dest %q, Dir %q; want the library and a scratch directory beside %q", k.spec.Source, k.spec.Dest, k.spec.Dir, dest)
	}
	if _, err := os.Stat(k.spec.Dest); !os.IsNotExist(err) {
		t.Fatalf("the scratch directory %s is left behind: %v", k.spec.Dest, err)
	}
}
