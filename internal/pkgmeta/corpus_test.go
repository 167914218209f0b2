package pkgmeta_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/pkgmeta"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// The corpus (testdata/corpus, README there) holds metadata files written
// for this test, each reproducing what a real backend or R writes, and
// the test adds fuzzed variants of them. Python's importlib.metadata and
// R's read.dcf are the oracle: each runs once over every file, and
// pkgmeta must read the same fields from each, and refuse exactly the
// files they refuse. PKGMETA_EXTRA_PYTHON and PKGMETA_EXTRA_R (globs
// separated by ':') add files from outside the tree, e.g. the metadata
// Debian's packages install, for a check by hand.

// variantsPerFile is how many fuzzed variants each corpus file gets.
const variantsPerFile = 8

// pythonOracle reads each listed file as importlib.metadata reads an
// installed distribution's METADATA, and prints the fields as JSON.
const pythonOracle = `
import json, pathlib, shutil, sys, tempfile
import importlib.metadata as md
out = {}
with tempfile.TemporaryDirectory() as d:
    dist = pathlib.Path(d)
    for f in open(sys.argv[1], encoding="utf-8").read().splitlines():
        shutil.copyfile(f, dist / "METADATA")
        try:
            m = md.PathDistribution(dist).metadata
        except Exception as e:
            out[f] = {"error": type(e).__name__}
            continue
        r = {k: m.get(k) for k in ("Name", "Version", "Requires-Python", "License", "Summary")}
        r["Requires-Dist"] = m.get_all("Requires-Dist")
        out[f] = r
json.dump(out, sys.stdout)
`

// rOracle reads each listed file as R CMD build's .read_description
// does, and prints per file: path, "error" and the message, or "ok", the
// number of records and the first record's fields, each value in hex
// ("NA" when absent).
const rOracle = `
files <- readLines(commandArgs(TRUE)[1])
keep <- tools:::.keep_white_description_fields
hex <- function(x) if (is.na(x)) "NA" else paste(as.character(charToRaw(x)), collapse = "")
for (f in files) {
  r <- tryCatch(read.dcf(f, keep.white = keep), error = function(e) e)
  if (inherits(r, "error")) { cat(f, "\terror\t", hex(conditionMessage(r)), "\n", sep = ""); next }
  cat(f, "\tok\t", nrow(r), sep = "")
  if (nrow(r) >= 1) for (fld in c("Package", "Version", "Depends", "Imports", "LinkingTo", "License", "Title")) {
    v <- if (fld %in% colnames(r)) r[1, fld] else NA
    cat("\t", fld, "=", hex(v), sep = "")
  }
  cat("\n")
}
`

func TestCorpusReadsAsPythonAndRDo(t *testing.T) {
	testenv.Require(t, "/usr/bin/python3", "Rscript")
	t.Parallel()
	tmp := t.TempDir()
	python := corpus(t, tmp, "python", "PKGMETA_EXTRA_PYTHON")
	r := corpus(t, tmp, "r", "PKGMETA_EXTRA_R")
	t.Logf("corpus: %d Python files, %d R files (with %d fuzzed variants each)", len(python), len(r), variantsPerFile)

	t.Run("python", func(t *testing.T) {
		out := runOracle(t, tmp, python, "/usr/bin/python3", "-c", pythonOracle)
		var want map[string]map[string]any
		if err := json.Unmarshal(out, &want); err != nil {
			t.Fatalf("python oracle: %v", err)
		}
		agree := 0
		for _, f := range python {
			if comparePython(t, f, want[f]) {
				agree++
			}
		}
		t.Logf("Python: pkgmeta agrees with importlib.metadata on %d of %d files", agree, len(python))
	})
	t.Run("r", func(t *testing.T) {
		out := runOracle(t, tmp, r, "Rscript", "-e", rOracle)
		want := map[string][]string{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			cols := strings.Split(sc.Text(), "\t")
			want[cols[0]] = cols[1:]
		}
		agree := 0
		for _, f := range r {
			if compareR(t, f, want[f]) {
				agree++
			}
		}
		t.Logf("R: pkgmeta agrees with read.dcf on %d of %d files", agree, len(r))
	})
}

// comparePython checks pkgmeta against importlib.metadata on one file.
func comparePython(t *testing.T, file string, want map[string]any) bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m, err := pkgmeta.ParseCoreMetadata(filepath.Base(file), data)
	if want == nil {
		t.Errorf("%s: the oracle did not read it", file)
		return false
	}
	if _, refused := want["error"]; refused || err != nil {
		if !refused || err == nil {
			t.Errorf("%s: importlib.metadata: %v, pkgmeta: %v", file, want["error"], err)
			return false
		}
		return true
	}
	ok := true
	for _, k := range []string{"Name", "Version", "Requires-Python", "License", "Summary"} {
		var got any
		if v, present := m.Fields[k]; present {
			got = v
		}
		if got != want[k] {
			t.Errorf("%s: %s: pkgmeta %q, importlib.metadata %q", file, k, got, want[k])
			ok = false
		}
	}
	var wantDist []string
	if l, _ := want["Requires-Dist"].([]any); l != nil {
		for _, v := range l {
			wantDist = append(wantDist, v.(string))
		}
	}
	if !slices.Equal(m.All["Requires-Dist"], wantDist) {
		t.Errorf("%s: Requires-Dist: pkgmeta %q, importlib.metadata %q", file, m.All["Requires-Dist"], wantDist)
		ok = false
	}
	return ok
}

// compareR checks pkgmeta against read.dcf (and .read_description's one
// record) on one file.
func compareR(t *testing.T, file string, want []string) bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 2 {
		t.Errorf("%s: the oracle did not read it", file)
		return false
	}
	_, strictErr := pkgmeta.ParseDESCRIPTION(filepath.Base(file), data)
	m, records, err := pkgmeta.ParseDCFRecords(filepath.Base(file), data)
	if want[0] == "error" || err != nil {
		if want[0] != "error" || err == nil {
			msg, _ := hex.DecodeString(want[len(want)-1])
			t.Errorf("%s: read.dcf: %s %s, pkgmeta: %v", file, want[0], msg, err)
			return false
		}
		return true
	}
	n, _ := strconv.Atoi(want[1])
	if records != n || (strictErr == nil) != (n == 1) {
		t.Errorf("%s: read.dcf: %d records, pkgmeta: %d (ParseDESCRIPTION: %v)", file, n, records, strictErr)
		return false
	}
	ok := true
	for _, kv := range want[2:] {
		k, v, _ := strings.Cut(kv, "=")
		var wantV any
		if v != "NA" {
			b, _ := hex.DecodeString(v)
			wantV = string(b)
		}
		var got any
		if g, present := m.Fields[k]; present {
			got = g
		}
		if got != wantV {
			t.Errorf("%s: %s: pkgmeta %q, read.dcf %q", file, k, got, wantV)
			ok = false
		}
	}
	return ok
}

// runOracle runs the oracle once over files, listed in a file it gets as
// its argument, and returns what it printed.
func runOracle(t *testing.T, tmp string, files []string, cmd ...string) []byte {
	t.Helper()
	list := filepath.Join(tmp, filepath.Base(cmd[0])+".list")
	if err := os.WriteFile(list, []byte(strings.Join(files, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := exec.Command(cmd[0], append(cmd[1:], list)...)
	c.Env = append(os.Environ(), "LANG=C.UTF-8", "LC_ALL=C.UTF-8")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd[0], err, stderr.Bytes())
	}
	return out
}

// corpus lists the corpus files of kind, writes their fuzzed variants to
// tmp and lists them too, with the files extraEnv's globs name.
func corpus(t *testing.T, tmp, kind, extraEnv string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "corpus", kind, "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus in testdata/corpus/%s: %v", kind, err)
	}
	for i, f := range files {
		if files[i], err = filepath.Abs(f); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(files)
	dir := filepath.Join(tmp, kind)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(23, uint64(len(kind))))
	var all []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, f)
		for i := range variantsPerFile {
			v := filepath.Join(dir, fmt.Sprintf("%s.%d", filepath.Base(f), i))
			if err := os.WriteFile(v, mutate(rng, data, kind), 0o644); err != nil {
				t.Fatal(err)
			}
			all = append(all, v)
		}
	}
	if os.Getenv(extraEnv) != "" {
		for _, g := range strings.Split(os.Getenv(extraEnv), ":") {
			m, _ := filepath.Glob(g)
			for _, f := range m {
				if st, err := os.Stat(f); err == nil && st.Mode().IsRegular() {
					all = append(all, f)
				}
			}
		}
	}
	return all
}

// mutate makes one to four of the edits that broken writers make: line
// breaks changed, joined or added, lines indented, dropped, repeated or
// cut, and stray bytes.
func mutate(rng *rand.Rand, data []byte, kind string) []byte {
	inserts := []string{" ", "\t", ":", "From ", "X-Extra: y\n", "\uFEFF", "\n", " .\n", "\t.\n", "  \n",
		"Name: dup\n", "Version: 9\n", "Requires-Dist: z\n", "Summary: s\n continued\n", "é", "\x0b", ": v\n"}
	if kind == "r" {
		inserts = append(inserts, "Package: dup\n", "Imports: z,\n    w\n", "Description: d\n  .\n", "Title: x  \n", "Bad Field: x\n")
	} else {
		inserts = append(inserts, "\xff", "License: L\n        \n        more\n", "Home page: x\n")
	}
	out := slices.Clone(data)
	for range 1 + rng.IntN(4) {
		lines := bytes.SplitAfter(out, []byte("\n"))
		i := rng.IntN(len(lines))
		switch rng.IntN(6) {
		case 0: // a line break changed
			nl := []string{"\r\n", "\r", "", "\n\n", "\n \n", "\n  .\n", "\n\t"}[rng.IntN(7)]
			lines[i] = append(bytes.TrimSuffix(lines[i], []byte("\n")), nl...)
		case 1: // something inserted at a line's start
			lines[i] = append([]byte(inserts[rng.IntN(len(inserts))]), lines[i]...)
		case 2:
			lines = slices.Delete(lines, i, i+1)
		case 3:
			lines = slices.Insert(lines, i, slices.Clone(lines[i]))
		case 4: // something inserted inside a line
			at := rng.IntN(len(lines[i]) + 1)
			lines[i] = slices.Insert(slices.Clone(lines[i]), at, []byte(inserts[rng.IntN(len(inserts))])...)
		case 5: // the file cut short
			if len(out) > 0 {
				out = out[:rng.IntN(len(out))]
				continue
			}
		}
		out = bytes.Join(lines, nil)
	}
	return out
}
