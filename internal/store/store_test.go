package store

import (
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
	if err := s.Discard("src", "pkg", 7, 4); err != nil {
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
	if _, err := os.Lstat(filepath.Join(s.Root, "src", "pkg", "1", "1")); !os.IsNotExist(err) {
		t.Fatalf("a failed Put left its attempt's directory: %v", err)
	}
}
