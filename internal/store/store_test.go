package store

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

func TestPutCopiesRegularFilesAndOpenFindsThemByName(t *testing.T) {
	t.Parallel()
	s, err := New(filepath.Join(t.TempDir(), "packages"))
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	f := filepath.Join(src, "pkg_1.0.tar.gz")
	os.WriteFile(f, []byte("tarball"), 0o600)
	arts, err := s.Put("src", "pkg", 7, 3, src, []registry.Artifact{{File: filepath.Base(f), Kind: "source"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(arts) != 1 || arts[0].Size != 7 || arts[0].SHA256 != "db4b4d0d1cb480bf9aeea253771c00febe627f236765fa37d6a5614f079a3aa0" || arts[0].Kind != "source" {
		t.Fatalf("artifacts = %+v", arts)
	}
	rc, err := s.Open("src", "pkg", 7, 3, "pkg_1.0.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	for _, bad := range []string{"../x", ".incoming-1", "", "a/b"} {
		if _, err := s.Open("src", "pkg", 7, 3, bad); err == nil {
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
	// Another attempt's files are apart, and discarding them leaves these.
	if _, err := s.Put("src", "pkg", 7, 4, src, []registry.Artifact{{File: filepath.Base(f), Kind: "source"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Discard("src", "pkg", 7, 4, arts); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open("src", "pkg", 7, 4, "pkg_1.0.tar.gz"); err == nil {
		t.Error("a discarded attempt's file is still served")
	}
	if rc, err := s.Open("src", "pkg", 7, 3, "pkg_1.0.tar.gz"); err != nil {
		t.Errorf("discarding attempt 4 removed attempt 3's file: %v", err)
	} else {
		rc.Close()
	}
	if _, err := s.Put("..", "pkg", 1, 1, src, nil); err == nil {
		t.Error("a source of .. was accepted")
	}
	for _, bad := range []string{"../pkg_1.0.tar.gz", ".hidden", "", "a/b"} {
		if _, err := s.Put("src", "pkg", 8, 1, src, []registry.Artifact{{File: bad, Kind: "source"}}); err == nil {
			t.Errorf("Put of artifact %q succeeded", bad)
		}
	}
}

func TestPutRefusesSymlinkedArtifacts(t *testing.T) {
	t.Parallel()
	s, _ := New(t.TempDir())
	dir := t.TempDir()
	os.Symlink("/etc/passwd", filepath.Join(dir, "evil.tar.gz"))
	os.WriteFile(filepath.Join(dir, "good.tar.gz"), []byte("x"), 0o644)
	if _, err := s.Put("src", "pkg", 1, 1, dir, []registry.Artifact{{File: "good.tar.gz"}, {File: "evil.tar.gz"}}); err == nil {
		t.Fatal("a symlink planted by the build was followed")
	}
	// A failed Put leaves nothing behind, not even the files it stored.
	if left, _ := os.ReadDir(filepath.Join(s.Root, "src", "pkg")); len(left) != 0 {
		t.Fatalf("a failed Put left %v", left)
	}
}

func TestOpenReadsTheEarlierLayouts(t *testing.T) {
	t.Parallel()
	s, _ := New(t.TempDir())
	for path, content := range map[string]string{
		"src/pkg/5/pkg_1.0.tar.gz":   "before attempt tokens",
		"src/pkg/6/2/pkg_1.0.tar.gz": "a directory per attempt",
	} {
		os.MkdirAll(filepath.Join(s.Root, filepath.Dir(path)), 0o755)
		os.WriteFile(filepath.Join(s.Root, path), []byte(content), 0o644)
	}
	for _, c := range []struct {
		build, token int64
		want         string
	}{{5, 0, "before attempt tokens"}, {6, 2, "a directory per attempt"}} {
		f, err := s.Open("src", "pkg", c.build, c.token, "pkg_1.0.tar.gz")
		if err != nil {
			t.Fatalf("build %d token %d: %v", c.build, c.token, err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if string(got) != c.want {
			t.Fatalf("build %d token %d: %q, want %q", c.build, c.token, got, c.want)
		}
	}
}

func TestHighestBuildIDReadsTheAttemptsFileNames(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.HighestBuildID(); err != nil || n != 0 {
		t.Fatalf("empty store: %d %v", n, err)
	}
	for _, p := range []string{"src/a/7-1796598339238052-a_1.0.tar.gz", "src/b/12-3-b-1.0.whl", "other/c/9/2/c.tar.gz", "src/a/notes.txt"} {
		path := filepath.Join(s.Root, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.HighestBuildID(); err != nil || n != 12 {
		t.Fatalf("highest build id %d (%v), want 12", n, err)
	}
}
