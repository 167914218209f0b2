//go:build linux

package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The disk watch counts what a directory without its owner's read and
// search bits holds, gives the directory its mode back, never changes
// what a symlink points to, and counts a tree nested deeper than it
// follows as over any limit.
func TestTheDiskWatchSeesBehindClosedDirectoriesAndFollowsNoSymlink(t *testing.T) {
	root := t.TempDir()
	hidden := filepath.Join(root, "hidden")
	if err := os.Mkdir(hidden, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hidden, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(hidden, 0o200); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(hidden, 0o755) }) // for TempDir's removal
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(outside), filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(outside), 0o300); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Dir(outside), 0o755) })
	w := &watcher{hc: &launchSettings{TmpDir: root}}
	if got := w.diskUsed(); got < 1<<20 {
		t.Errorf("disk used %d, want at least the 1 MiB behind the closed directory", got)
	}
	for path, want := range map[string]os.FileMode{hidden: 0o200, filepath.Dir(outside): 0o300} {
		if st, err := os.Lstat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v) after the walk, want %v", path, st.Mode().Perm(), err, want)
		}
	}

	deep := t.TempDir()
	fd, err := unix.Open(deep, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("d", 200)
	for range maxDiskDepth + 2 {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	unix.Close(fd)
	if got := (&watcher{hc: &launchSettings{Dest: deep}}).diskUsed(); got < 1<<62 {
		t.Errorf("a tree deeper than %d directories counts %d bytes, want it over any limit", maxDiskDepth, got)
	}
}
