package store

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

func TestDirKeepsTheContract(t *testing.T) {
	t.Parallel()
	testContract(t, func(t *testing.T) Artifacts {
		s, err := NewDir(filepath.Join(t.TempDir(), "packages"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestPutRefusesSymlinkedArtifacts(t *testing.T) {
	t.Parallel()
	s, _ := NewDir(t.TempDir())
	dir := t.TempDir()
	os.Symlink("/etc/passwd", filepath.Join(dir, "evil.tar.gz"))
	os.WriteFile(filepath.Join(dir, "good.tar.gz"), []byte("x"), 0o644)
	if _, err := s.Put(context.Background(), "src", "pkg", 1, 1, dir, []registry.Artifact{{File: "good.tar.gz"}, {File: "evil.tar.gz"}}); err == nil {
		t.Fatal("a symlink planted by the build was followed")
	}
	// A failed Put leaves nothing behind, not even the files it stored.
	if left, _ := os.ReadDir(filepath.Join(s.Root, "src", "pkg")); len(left) != 0 {
		t.Fatalf("a failed Put left %v", left)
	}
}

func TestOpenReadsTheEarlierLayouts(t *testing.T) {
	t.Parallel()
	s, _ := NewDir(t.TempDir())
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
		f, err := s.Open(context.Background(), "src", "pkg", c.build, c.token, "pkg_1.0.tar.gz")
		if err != nil {
			t.Fatalf("build %d token %d: %v", c.build, c.token, err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if string(got) != c.want {
			t.Fatalf("build %d token %d: %q, want %q", c.build, c.token, got, c.want)
		}
	}
	// The sweep never sees the earlier layouts: they are no attempt's
	// files as Put writes them.
	if got := walk(t, s); len(got) != 0 {
		t.Fatalf("walk = %v", got)
	}
}
