package recipe

import (
	"os"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
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
