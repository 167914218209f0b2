package pkgmeta

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseDCFReadsDescription(t *testing.T) {
	t.Parallel()
	f, err := ParseDCF([]byte("Package: shiny\nVersion: 1.8.0\nImports: a,\n    b (>= 1.0)\nTitle: x: y\n\nPackage: second-record\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f["Package"] != "shiny" || f["Version"] != "1.8.0" || f["Imports"] != "a,\nb (>= 1.0)" || f["Title"] != "x: y" {
		t.Fatalf("fields = %q", f)
	}
	for _, bad := range []string{"  continuation first\n", "no colon here\n", ": no name\n"} {
		if _, err := ParseDCF([]byte(bad)); err == nil {
			t.Errorf("ParseDCF(%q) accepted", bad)
		}
	}
}

func TestParsePKGInfoStopsAtTheBody(t *testing.T) {
	t.Parallel()
	f, err := ParsePKGInfo([]byte("Metadata-Version: 2.1\r\nName: hello-py\r\nVersion: 0.2.0\r\n\r\nName: not-this\n"))
	if err != nil || f["Name"] != "hello-py" || f["Version"] != "0.2.0" {
		t.Fatalf("fields = %q, %v", f, err)
	}
}

func TestNormalizeNameIsPEP503(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"Hello_World": "hello-world", "a.-_b": "a-b", "Foo--Bar": "foo-bar", "x": "x"} {
		if got := NormalizeName(in); got != want {
			t.Errorf("NormalizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

// setuptools writes a multi-paragraph License with whitespace-only
// continuation lines; the headers after it must survive.
func TestParsePKGInfoKeepsHeadersAfterAMultiLineLicense(t *testing.T) {
	t.Parallel()
	data := "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nLicense: MIT License\n        \n        Copyright (c) 2024\n        \nRequires-Python: >=3.9\nClassifier: A\n\nlong description\nRequires-Python: >=2.7\n"
	f, err := ParsePKGInfo([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if f["Requires-Python"] != ">=3.9" || f["Classifier"] != "A" {
		t.Errorf("headers after the License lost or wrong: %q", f)
	}
	if !strings.Contains(f["License"], "Copyright (c) 2024") {
		t.Errorf("License = %q", f["License"])
	}
}

func TestDESCRIPTIONChecks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(s string) {
		os.WriteFile(filepath.Join(dir, "DESCRIPTION"), []byte(s), 0o644)
	}
	write("Package: good.pkg\nVersion: 1.2-3\n")
	if m, err := ReadDESCRIPTION(dir); err != nil || m.Fields["Package"] != "good.pkg" || m.Fields["Version"] != "1.2-3" {
		t.Fatalf("ReadDESCRIPTION = %v, %v", m, err)
	}
	for _, bad := range []string{"Package: 1bad\nVersion: 1\n", "Package: ok\nVersion: one\n", "Version: 1\n", "Package: ../x\nVersion: 1\n",
		"Package: ok\nVersion: 1\n\nTitle: a second record\n"} {
		write(bad)
		if _, err := ReadDESCRIPTION(dir); err == nil {
			t.Errorf("ReadDESCRIPTION accepted %q", bad)
		}
	}
	// A DESCRIPTION that is a symlink to a host file is not followed.
	os.Remove(filepath.Join(dir, "DESCRIPTION"))
	os.Symlink("/etc/passwd", filepath.Join(dir, "DESCRIPTION"))
	if _, err := ReadDESCRIPTION(dir); err == nil {
		t.Fatal("followed a symlinked DESCRIPTION")
	}
}
