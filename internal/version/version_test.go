package version

import "testing"

func TestCompareOrdersTagsAndPackageVersions(t *testing.T) {
	t.Parallel()
	ordered := []string{"v0.9", "v1.2.9", "v1.10.0", "v1.10.1", "v2.0.0"}
	for i := 1; i < len(ordered); i++ {
		if Compare(ordered[i-1], ordered[i]) >= 0 || Compare(ordered[i], ordered[i-1]) <= 0 {
			t.Errorf("%s should be older than %s", ordered[i-1], ordered[i])
		}
	}
	if Compare("4.10.1", "4.9.3") <= 0 {
		t.Error("4.10.1 should be newer than 4.9.3")
	}
	if Compare("1.0-2", "1.0-2") != 0 {
		t.Error("a version is not equal to itself")
	}
}

// FuzzCompare: any two strings order without panicking, antisymmetrically.
func FuzzCompare(f *testing.F) {
	for _, s := range [][2]string{{"v1.0", "v1.0.1"}, {"4.10.1", "4.9.3"}, {"", "x"}, {"1.0-2", "1.0.2"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if Compare(a, b) != -Compare(b, a) {
			t.Fatalf("Compare(%q, %q) is not antisymmetric", a, b)
		}
	})
}
