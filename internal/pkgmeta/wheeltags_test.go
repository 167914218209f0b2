package pkgmeta

import (
	"slices"
	"testing"
)

// A wheel's name gives its tags, compressed sets expanded; only wheels
// whose every tag is linux_<arch> are a machine's local build.
func TestWheelTagsAndLocalLinuxWheels(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		file  string
		tags  []string
		local bool
	}{
		{"demo-1.0-py3-none-any.whl", []string{"py3-none-any"}, false},
		{"demo-1.0-py2.py3-none-any.whl", []string{"py2-none-any", "py3-none-any"}, false},
		{"demo-1.0-cp311-cp311-linux_x86_64.whl", []string{"cp311-cp311-linux_x86_64"}, true},
		{"demo-1.0-1b-cp311-cp311-linux_aarch64.whl", []string{"cp311-cp311-linux_aarch64"}, true},
		{"demo-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
			[]string{"cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"}, false},
	} {
		tags, err := WheelTags(c.file)
		if err != nil || !slices.Equal(tags, c.tags) || LocalLinuxOnly(tags) != c.local {
			t.Errorf("%s: tags %v (%v), local %v; want %v, local %v", c.file, tags, err, LocalLinuxOnly(tags), c.tags, c.local)
		}
	}
	if _, err := WheelTags("demo-1.0.tar.gz"); err == nil {
		t.Error("an sdist's name gave wheel tags")
	}
}
