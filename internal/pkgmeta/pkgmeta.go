// Package pkgmeta reads what an R or Python package says about itself:
// R's DESCRIPTION, Python's PKG-INFO and wheel METADATA, from a directory,
// a tarball or a wheel, never following a symlink out of what it reads.
// Each file is read as the tool that consumes it reads it: DESCRIPTION
// as R CMD build (read.dcf), core metadata as importlib.metadata (Python's
// email parser); what they accept is accepted, each malformation a
// warning, and what they refuse is an Error naming the file and the line
// (testdata/corpus holds the proof). It is a leaf: the recipes check their
// results with it, the API names R builders with it and the package
// indexes describe releases with it. It does not build or validate
// packages beyond the fields those callers need.
package pkgmeta

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Fields is a parsed DESCRIPTION (Debian control format) or PKG-INFO /
// METADATA (RFC 822 headers) file: one value of each field, the one its
// own tool gives (Metadata.Fields).
type Fields map[string]string

// ParseDCF reads the first record of a DCF file as R's read.dcf does. A
// DESCRIPTION to build from is read with ParseDESCRIPTION, which also
// holds it to R CMD build's rules.
func ParseDCF(data []byte) (Fields, error) {
	m, _, err := parseDCF("DCF", data)
	if err != nil {
		return nil, err
	}
	return m.Fields, nil
}

// ParsePKGInfo reads Python core metadata (PKG-INFO, METADATA) as
// ParseCoreMetadata does, for callers that need no warnings.
func ParsePKGInfo(data []byte) (Fields, error) {
	m, err := ParseCoreMetadata("PKG-INFO", data)
	if err != nil {
		return nil, err
	}
	return m.Fields, nil
}

// ReadDESCRIPTION reads dir/DESCRIPTION as R CMD build would and checks
// its Package and Version.
func ReadDESCRIPTION(dir string) (*Metadata, error) {
	data, err := readFileNoFollow(path.Join(dir, "DESCRIPTION"), 1<<20)
	if err != nil {
		return nil, fmt.Errorf("DESCRIPTION: %w", err)
	}
	m, err := ParseDESCRIPTION("DESCRIPTION", data)
	if err != nil {
		return nil, err
	}
	pkg, version := m.Fields["Package"], m.Fields["Version"]
	if pkg == "" || version == "" {
		return nil, errors.New("DESCRIPTION: Package and Version are required")
	}
	if !validRPackage(pkg) {
		return nil, fmt.Errorf("DESCRIPTION: Package %q is not a valid R package name", pkg)
	}
	if !validVersion(version) {
		return nil, fmt.Errorf("DESCRIPTION: Version %q is not a valid version", version)
	}
	return m, nil
}

// PackageName reads the package name from the DESCRIPTION in dir (used to
// name R builders that were created without a name).
func PackageName(dir string) (string, error) {
	m, err := ReadDESCRIPTION(dir)
	if err != nil {
		return "", err
	}
	return m.Fields["Package"], nil
}

func validRPackage(s string) bool {
	if len(s) < 2 || !(s[0] >= 'A' && s[0] <= 'Z' || s[0] >= 'a' && s[0] <= 'z') || strings.HasSuffix(s, ".") {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.') {
			return false
		}
	}
	return true
}

func validVersion(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

// readFileNoFollow reads a regular file without following a final symlink,
// so a hostile checkout cannot make the worker read a host file.
func readFileNoFollow(p string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

// tarMember reads one member of a .tar.gz.
func TarMember(file, member string) ([]byte, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := tarMemberFrom(f, member)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path.Base(file), err)
	}
	return data, nil
}

// zipMember reads the first member of a zip file whose name matches
// suffix at depth 2 (e.g. "x-1.0.dist-info/METADATA").
func ZipMember(file, suffix string) ([]byte, error) {
	z, err := zip.OpenReader(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path.Base(file), err)
	}
	defer z.Close()
	data, err := zipFind(&z.Reader, suffix)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path.Base(file), err)
	}
	return data, nil
}

// NormalizeName is PEP 503's name normalisation.
func NormalizeName(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if r == '-' || r == '_' || r == '.' {
			if !dash {
				b.WriteByte('-')
			}
			dash = true
			continue
		}
		b.WriteRune(r)
		dash = false
	}
	return b.String()
}

// ReadTarDESCRIPTION reads pkg/DESCRIPTION from an R source tarball.
func ReadTarDESCRIPTION(r io.Reader, pkg string) (Fields, error) {
	data, err := tarMemberFrom(r, pkg+"/DESCRIPTION")
	if err != nil {
		return nil, err
	}
	return ParseDCF(data)
}

// ReadSdistPKGInfo reads the top-level PKG-INFO of an sdist.
func ReadSdistPKGInfo(r io.Reader) (Fields, error) {
	data, err := tarFind(r, "PKG-INFO", func(name string) bool {
		return strings.Count(name, "/") == 1 && path.Base(name) == "PKG-INFO"
	})
	if err != nil {
		return nil, err
	}
	return ParsePKGInfo(data)
}

// ReadWheelMetadata reads *.dist-info/METADATA from a wheel of size
// bytes.
func ReadWheelMetadata(f io.ReaderAt, size int64) (Fields, error) {
	z, err := zip.NewReader(f, size)
	if err != nil {
		return nil, err
	}
	data, err := zipFind(z, ".dist-info/METADATA")
	if err != nil {
		return nil, err
	}
	return ParsePKGInfo(data)
}

func tarMemberFrom(r io.Reader, member string) ([]byte, error) {
	return tarFind(r, member, func(name string) bool { return name == member })
}

// tarFind reads the first regular file of a .tar.gz whose cleaned name
// matches; what names it in errors.
func tarFind(r io.Reader, what string, match func(name string) bool) ([]byte, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("no %s", what)
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg && match(path.Clean(h.Name)) {
			return io.ReadAll(io.LimitReader(tr, 1<<20))
		}
	}
}

// zipFind reads the first member at depth 2 whose name ends in suffix.
func zipFind(z *zip.Reader, suffix string) ([]byte, error) {
	for _, m := range z.File {
		if strings.Count(m.Name, "/") == 1 && strings.HasSuffix(m.Name, suffix) {
			rc, err := m.Open()
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			return io.ReadAll(io.LimitReader(rc, 1<<20))
		}
	}
	return nil, fmt.Errorf("no *%s", suffix)
}
