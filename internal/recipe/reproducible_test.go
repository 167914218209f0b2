package recipe

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/detect"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/pkgmeta"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// commitTime is when the test repositories' commits were made: long before
// the builds, so that anything stamped with the time of the build differs.
const commitTime = 1700000000

// oldRepo commits the example package at commitTime.
func oldRepo(t *testing.T, example string) (dir, sha string) {
	t.Helper()
	testenv.Require(t, "git")
	abs, _ := filepath.Abs(filepath.Join("..", "..", "examples", example))
	dir, _ = testenv.Repo(t, testenv.CopyTree(t, abs))
	cmd := exec.Command("git", "-c", "user.name=t", "-c", "user.email=t@invalid", "commit", "--quiet", "--amend", "--no-edit", "--reset-author")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_DATE=@1700000000 +0000", "GIT_COMMITTER_DATE=@1700000000 +0000", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("amend: %v\n%s", err, out)
	}
	return dir, testenv.Git(t, dir, "rev-parse", "HEAD")
}

// buildTwice clones the commit twice, as two workers would, and builds
// each clone with recipe; it returns the artifacts' sha256 by file name.
func buildTwice(t *testing.T, recipe Recipe, repo, sha string) (first, second map[string]string) {
	t.Helper()
	gc := &git.Client{Policy: git.URLPolicy{AllowFile: true}}
	var runs [2]map[string]string
	for i := range runs {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		checkout := filepath.Join(t.TempDir(), "src")
		co, err := gc.Clone(ctx, checkout, git.CloneOptions{URL: "file://" + repo, SHA: sha, Depth: 1})
		when := co.Time
		if err != nil || when.Unix() != commitTime {
			t.Fatalf("commit time %v %v, want %d", when, err, commitTime)
		}
		var log strings.Builder
		dest := t.TempDir()
		out, err := recipe.Build(ctx, Input{Checkout: checkout, Dest: dest, Log: &log, SourceDate: when})
		if err != nil {
			t.Fatalf("build %d: %v\n%s", i+1, err, log.String())
		}
		runs[i] = map[string]string{}
		for _, a := range out.Artifacts {
			path := filepath.Join(dest, a.File)
			runs[i][a.File] = fileSHA256(t, path)
			if strings.HasSuffix(a.File, ".tar.gz") {
				checkTarballTimes(t, path)
			}
		}
	}
	return runs[0], runs[1]
}

// testLimits are the runner's defaults in these tests, as the worker sets
// them from the settings: the recipes set none.
var testLimits = sandbox.Limits{Timeout: 2 * time.Minute, Output: 1 << 20}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// checkTarballTimes fails unless every time in the tarball is at most the
// commit's: two builds in the same second would otherwise agree by luck.
func checkTarballTimes(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if zr.ModTime.Unix() != commitTime {
		t.Errorf("%s: gzip header time %v, want the commit's", filepath.Base(p), zr.ModTime)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.ModTime.Unix() > commitTime {
			t.Errorf("%s: %s has mtime %v, after the commit", filepath.Base(p), hdr.Name, hdr.ModTime)
		}
		if filepath.Base(hdr.Name) == "DESCRIPTION" && strings.Count(hdr.Name, "/") == 1 {
			b, _ := io.ReadAll(tr)
			if want := "Packaged: 2023-11-14 22:13:20 UTC;"; !strings.Contains(string(b), want) {
				t.Errorf("%s: DESCRIPTION lacks %q:\n%s", filepath.Base(p), want, b)
			}
		}
	}
}

func TestPythonBuildOfOneCommitTwiceGivesTheSameBytes(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "python3")
	repo, sha := oldRepo(t, "python/hellofleet-py")
	p := &Python{Runner: sandbox.NewDirect(sandbox.Config{TempDir: t.TempDir(), Defaults: testLimits}),
		Tool: detect.Tool{Language: "python", Path: "/usr/bin/python3"}}
	first, second := buildTwice(t, p, repo, sha)
	if len(first) != 2 {
		t.Fatalf("artifacts %v, want an sdist and a wheel", first)
	}
	for name, sum := range first {
		if second[name] != sum {
			t.Errorf("%s: sha256 %s, then %s", name, sum, second[name])
		}
	}
}

func TestRBuildOfOneCommitTwiceGivesTheSameBytes(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "R")
	repo, sha := oldRepo(t, "r/hellofleet")
	home, err := exec.Command("R", "RHOME").Output()
	if err != nil {
		t.Fatal(err)
	}
	r := &R{Runner: sandbox.NewDirect(sandbox.Config{TempDir: t.TempDir(), Defaults: testLimits}),
		Tool: detect.Tool{Language: "r", Path: strings.TrimSpace(string(home)), Version: "test"}}
	first, second := buildTwice(t, r, repo, sha)
	if len(first) != 1 {
		t.Fatalf("artifacts %v, want one source tarball", first)
	}
	for name, sum := range first {
		if second[name] != sum {
			t.Errorf("%s: sha256 %s, then %s", name, sum, second[name])
		}
	}
}

// setuptools writes a multi-line License with continuation lines, a blank
// line of it as whitespace only; every header after it must survive, or
// the index serves no Requires-Python.
func TestSetuptoolsSdistWithAMultiLineLicenseKeepsRequiresPython(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "python3")
	checkout := filepath.Join(t.TempDir(), "src")
	license := "Copyright (c) 2026 The Fleet\n\nPermission is hereby granted, free of charge,\nto any person obtaining a copy."
	files := map[string]string{
		"pyproject.toml": `[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "multiline-license"
version = "1.2.3"
requires-python = ">=3.9"
license = {text = """` + license + `"""}

[tool.setuptools]
py-modules = ["multiline_license"]
`,
		"multiline_license.py": "X = 1\n",
	}
	for name, content := range files {
		if err := os.MkdirAll(checkout, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(checkout, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := &Python{Runner: sandbox.NewDirect(sandbox.Config{TempDir: t.TempDir(), Defaults: testLimits}),
		Tool: detect.Tool{Language: "python", Path: "/usr/bin/python3"}}
	var log strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dest := t.TempDir()
	out, err := p.Build(ctx, Input{Checkout: checkout, Dest: dest, Log: &log})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log.String())
	}
	sdist := out.Artifacts[0].File
	raw, err := pkgmeta.TarMember(filepath.Join(dest, sdist), strings.TrimSuffix(sdist, ".tar.gz")+"/PKG-INFO")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "\n        \n") {
		t.Fatalf("this setuptools wrote no whitespace-only continuation line; the test proves nothing:\n%s", raw)
	}
	f, err := pkgmeta.ParsePKGInfo(raw)
	if err != nil {
		t.Fatal(err)
	}
	if f["Requires-Python"] != ">=3.9" || f["Name"] != "multiline-license" {
		t.Errorf("PKG-INFO parsed to Requires-Python %q, Name %q:\n%s", f["Requires-Python"], f["Name"], raw)
	}
	if !strings.Contains(f["License"], "Copyright (c) 2026 The Fleet") || !strings.Contains(f["License"], "to any person obtaining a copy.") {
		t.Errorf("License = %q", f["License"])
	}
}

// writeTarGz writes a .tar.gz of members (name → content), each stamped
// with mtime and owned by uid 1000, as a build run as a user would.
func writeTarGz(t testing.TB, file string, mtime time.Time, members [][2]string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	zw.ModTime = mtime
	tw := tar.NewWriter(zw)
	for _, m := range members {
		hdr := &tar.Header{Name: m[0], Mode: 0o644, Size: int64(len(m[1])), ModTime: mtime, Uid: 1000, Gid: 1000, Uname: "builder", Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(m[1]))
	}
	tw.Close()
	zw.Close()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// One pass makes the tarball reproducible, returns the member the checks
// need, and keeps every other member's bytes, however large.
func TestNormalizeTarGzStampsTimesAndReadsTheMemberTheChecksNeed(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "pkg_1.0.tar.gz")
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB, above what is read for the checks
	writeTarGz(t, file, time.Now(), [][2]string{
		{"pkg/DESCRIPTION", "Package: pkg\nVersion: 1.0\nPackaged: 2026-12-02 08:00:00 UTC; builder\n"},
		{"pkg/data/big.txt", big},
	})
	desc, err := normalizeTarGz(file, commitTime, "pkg/DESCRIPTION", fixRPackaged(commitTime))
	if err != nil {
		t.Fatal(err)
	}
	if want := "Packaged: 2023-11-14 22:13:20 UTC; builder"; !strings.Contains(string(desc), want) {
		t.Fatalf("returned DESCRIPTION lacks %q:\n%s", want, desc)
	}
	checkTarballTimes(t, file)
	got, err := pkgmeta.TarMember(file, "pkg/data/big.txt")
	if err != nil || string(got) != big[:len(got)] || len(got) != 1<<20 {
		t.Fatalf("big member: %d bytes, %v", len(got), err)
	}
	inTar, err := pkgmeta.TarMember(file, "pkg/DESCRIPTION")
	if err != nil || string(inTar) != string(desc) {
		t.Fatalf("DESCRIPTION in the tarball %q (%v), returned %q", inTar, err, desc)
	}
}

// A build may plant a symlink where its tarball should be; the worker
// neither reads nor rewrites what it points to, and fails the build.
func TestNormalizeTarGzRefusesASymlinkTheBuildPlanted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	host := filepath.Join(dir, "host-secret.tar.gz")
	writeTarGz(t, host, time.Now(), [][2]string{{"pkg/DESCRIPTION", "secret"}})
	before := fileSHA256(t, host)
	link := filepath.Join(dir, "dest", "pkg_1.0.tar.gz")
	os.MkdirAll(filepath.Dir(link), 0o755)
	if err := os.Symlink(host, link); err != nil {
		t.Fatal(err)
	}
	desc, err := normalizeTarGz(link, commitTime, "pkg/DESCRIPTION", nil)
	var bad *badTarballError
	if !errors.As(err, &bad) || desc != nil {
		t.Fatalf("normalizeTarGz(symlink) = %q, %v; want a bad tarball", desc, err)
	}
	if fileSHA256(t, host) != before {
		t.Fatal("the symlink's target was rewritten")
	}
	if _, err := normalizeTarGz(host, commitTime, "pkg/NOPE", nil); !errors.As(err, &bad) || !strings.Contains(err.Error(), "no pkg/NOPE") {
		t.Fatalf("missing member: %v", err)
	}
}

// BenchmarkNormalizeTarGz rewrites a tarball of the large R package's
// shape (700 small members) as a build's checks do.
func BenchmarkNormalizeTarGz(b *testing.B) {
	dir := b.TempDir()
	var members [][2]string
	members = append(members, [2]string{"pkg/DESCRIPTION", "Package: pkg\nVersion: 1.0\nPackaged: 2026-12-02 08:00:00 UTC; builder\n"})
	for i := range 700 {
		members = append(members, [2]string{fmt.Sprintf("pkg/R/f%03d.R", i), fmt.Sprintf("f%d <- function(x) {\n  .Call(\"c%03d\", as.numeric(x))\n}\n", i, i%150)})
	}
	src := filepath.Join(dir, "src.tar.gz")
	writeTarGz(b, src, time.Now(), members)
	raw, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(dir, "pkg_1.0.tar.gz")
	for b.Loop() {
		if err := os.WriteFile(file, raw, 0o644); err != nil {
			b.Fatal(err)
		}
		if _, err := normalizeTarGz(file, commitTime, "pkg/DESCRIPTION", fixRPackaged(commitTime)); err != nil {
			b.Fatal(err)
		}
	}
}
