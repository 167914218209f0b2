package git

import (
	"bytes"
	"compress/zlib"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// commitAt commits files in dir with the committer line ident and the
// committer time when, and returns the commit's sha.
func commitAt(t *testing.T, dir, ident string, when int64, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Git(t, dir, "add", "-A")
	name, email, _ := strings.Cut(ident, " <")
	cmd := exec.Command("git", "commit", "--quiet", "-m", "at a time")
	cmd.Dir = dir
	date := time.Unix(when, 0).UTC().Format(time.RFC3339)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir,
		"GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@invalid", "GIT_AUTHOR_DATE="+date,
		"GIT_COMMITTER_NAME="+name, "GIT_COMMITTER_EMAIL="+strings.TrimSuffix(email, ">"), "GIT_COMMITTER_DATE="+date)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("commit: %v\n%s", err, out)
	}
	return testenv.Git(t, dir, "rev-parse", "HEAD")
}

// The commit time read from the object store is git's own %ct, whether the
// commit is a loose object or packed, and whatever its committer's name.
func TestCommitTimeFromTheObjectStoreIsGits(t *testing.T) {
	t.Parallel()
	dir, _ := testenv.Repo(t, map[string]string{"a": "a"})
	var shas []string
	for i, ident := range []string{"Plain Name <p@invalid>", "Odd > Name <o@invalid>", "Ünïcode <u@invalid>"} {
		shas = append(shas, commitAt(t, dir, ident, 1500000000+int64(i)*86400, map[string]string{"a": ident}))
	}
	check := func(how string) {
		for _, sha := range shas {
			want := mustAtoi(t, testenv.Git(t, dir, "log", "-1", "--format=%ct", sha))
			got, err := readCommitTime(filepath.Join(dir, ".git"), sha)
			if err != nil || got.Unix() != want {
				t.Errorf("%s commit %s: read %v (%v), git says %d", how, sha[:8], got, err, want)
			}
		}
	}
	check("loose")
	testenv.Git(t, dir, "repack", "-adq")
	if m, _ := filepath.Glob(filepath.Join(dir, ".git", "objects", "??", "*")); len(m) != 0 {
		t.Fatalf("loose objects left after repack: %v", m)
	}
	check("packed")
	if _, err := readCommitTime(filepath.Join(dir, ".git"), strings.Repeat("0", 40)); err == nil {
		t.Error("a missing commit was read")
	}
}

// What the reader does not know (here a blob where a commit should be, a
// stream that is not zlib) is errNotHere, so that Clone asks git instead.
func TestCommitTimeReaderRefusesWhatItDoesNotKnow(t *testing.T) {
	t.Parallel()
	var blob bytes.Buffer
	zw := zlib.NewWriter(&blob)
	zw.Write([]byte("blob 9\x00committer x <y> 1 +0000\n"))
	zw.Close()
	for name, raw := range map[string][]byte{"blob": blob.Bytes(), "not zlib": []byte("commit 1\x00x"), "empty": nil} {
		if _, err := looseCommitTime(bytes.NewReader(raw)); err != errNotHere {
			t.Errorf("%s: err = %v, want errNotHere", name, err)
		}
	}
	// A pack entry of type 3 (a blob).
	if _, err := packedCommitTime(bytes.NewReader([]byte{0x39, 0x78, 0x9c}), 0); err != errNotHere {
		t.Errorf("packed blob: err = %v, want errNotHere", err)
	}
}

// A commit the reader cannot find (here behind an alternate) still has a
// time: git's, which Clone asks for then.
func TestGitGivesTheCommitTimeWhenTheReaderCannot(t *testing.T) {
	t.Parallel()
	dir, _ := testenv.Repo(t, map[string]string{"a": "a"})
	sha := commitAt(t, dir, "C <c@invalid>", 1600000000, map[string]string{"a": "b"})
	c := &Client{Policy: URLPolicy{AllowFile: true}}
	dst := filepath.Join(t.TempDir(), "checkout")
	if _, err := c.Clone(context.Background(), dst, CloneOptions{URL: "file://" + dir, SHA: sha, Depth: 1}); err != nil {
		t.Fatal(err)
	}
	// Hide the packs from the reader; git still reads the commit through
	// an alternate object directory.
	moved := filepath.Join(t.TempDir(), "objects")
	if err := os.Rename(filepath.Join(dst, ".git", "objects"), moved); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dst, ".git", "objects", "info"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, ".git", "objects", "info", "alternates"), []byte(moved+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readCommitTime(filepath.Join(dst, ".git"), sha); err != errNotHere {
		t.Fatalf("reader: %v, want errNotHere", err)
	}
	got, err := c.commitTime(context.Background(), dst, sha)
	if err != nil || got.Unix() != 1600000000 {
		t.Fatalf("commitTime = %v %v, want 1600000000", got, err)
	}
}
