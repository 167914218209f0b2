package index

import (
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/pkgmeta"
)

// A value of PACKAGES reads back, as read.dcf reads it, to the value the
// package's DESCRIPTION gave, empty lines (" .") included: a
// whitespace-only line would end the package's record.
func TestPACKAGESValuesReadBackAsWritten(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"a, b", "a,\nb (>= 1.0)", "a,\n\nb", "GPL-2\n\n\n| file LICENSE"} {
		f, err := pkgmeta.ParseDCF([]byte("Package: p\nImports: " + dcfValue(v) + "\nLicense: MIT\n"))
		if err != nil || f["Imports"] != v || f["License"] != "MIT" {
			t.Errorf("Imports %q written as %q reads back as %q, License %q (%v)", v, dcfValue(v), f["Imports"], f["License"], err)
		}
	}
}
