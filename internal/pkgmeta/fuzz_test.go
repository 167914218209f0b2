package pkgmeta

import (
	"strings"
	"testing"
)

// FuzzParseDCF: DESCRIPTION and core metadata parsing never panics, keeps
// field names non-empty and free of colons and line breaks, keeps what it
// returns bounded by what it read, and says every warning and refusal in
// one line. Whether it reads what R and Python read is the corpus test's.
func FuzzParseDCF(f *testing.F) {
	for _, s := range []string{
		"Package: x\nVersion: 1.0\n", "Imports: a,\n    b\n", " bad\n", "A:\n\nB: c\n",
		"Metadata-Version: 2.1\r\nName: p\r\n\r\nbody", "::::\n", "Name: \xff\n",
		"Name: p\nVersion: 1\nno separator\n", "From x\nName: y\n", "T: t\n  .\n  .\nL: l\n  m\n", "A: \r\r\nB: c\r",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(m *Metadata, err error) {
			if err != nil {
				if strings.ContainsAny(err.Error(), "\r\n") {
					t.Fatalf("refusal of more than one line: %q", err)
				}
				return
			}
			size := 0
			for k, v := range m.Fields {
				if k == "" || strings.ContainsAny(k, ":\r\n") {
					t.Fatalf("field name %q", k)
				}
				size += len(v)
			}
			if size > 3*len(data)+64 {
				t.Fatalf("%d bytes of fields from %d bytes", size, len(data))
			}
			for _, w := range m.Warnings {
				if strings.ContainsAny(w, "\r\n") {
					t.Fatalf("warning of more than one line: %q", w)
				}
			}
		}
		check(ParseDESCRIPTION("DESCRIPTION", data))
		check(ParseCoreMetadata("PKG-INFO", data))
		_ = NormalizeName(string(data))
	})
}
