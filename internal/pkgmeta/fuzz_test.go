package pkgmeta

import (
	"strings"
	"testing"
)

// FuzzParseDCF: DESCRIPTION and PKG-INFO parsing never panics and keeps
// field names free of spaces and colons.
func FuzzParseDCF(f *testing.F) {
	for _, s := range []string{
		"Package: x\nVersion: 1.0\n", "Imports: a,\n    b\n", " bad\n", "A:\n\nB: c\n",
		"Metadata-Version: 2.1\r\nName: p\r\n\r\nbody", "::::\n", "Name: \xff\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, parse := range []func([]byte) (Fields, error){ParseDCF, ParsePKGInfo} {
			fields, err := parse(data)
			if err != nil {
				continue
			}
			for k := range fields {
				if k == "" || strings.ContainsAny(k, " \t:\n") {
					t.Fatalf("field name %q", k)
				}
			}
		}
		_ = NormalizeName(string(data))
	})
}
