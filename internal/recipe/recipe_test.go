package recipe

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSubDirCannotLeaveTheCheckout(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	checkout := filepath.Join(root, "src")
	os.MkdirAll(filepath.Join(checkout, "pkg"), 0o755)
	os.Symlink("/etc", filepath.Join(checkout, "escape"))
	if _, err := packageDir(Input{Checkout: checkout, SubDir: "pkg"}); err != nil {
		t.Fatalf("a real sub_dir: %v", err)
	}
	for _, sub := range []string{"escape", "missing"} {
		_, err := packageDir(Input{Checkout: checkout, SubDir: sub})
		var f *Failure
		if !errors.As(err, &f) {
			t.Errorf("sub_dir %q: %v, want a build failure", sub, err)
		}
	}
}
