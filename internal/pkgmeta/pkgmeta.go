// Package pkgmeta reads what an R or Python package says about itself:
// R's DESCRIPTION (DCF), Python's PKG-INFO and wheel METADATA (RFC 822
// headers), from a directory, a tarball or a wheel, never following a
// symlink out of what it reads. It is a leaf: the recipes check their
// results with it, the API names R builders with it and the package
// indexes describe releases with it. It does not build or validate
// packages beyond the fields those callers need.
package pkgmeta

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Fields is a parsed DESCRIPTION (Debian control format) or PKG-INFO /
// METADATA (RFC 822 headers) file: the first value of each field.
type Fields map[string]string

// ParseDCF parses R's DESCRIPTION format: "Field: value" with indented
// continuation lines, one record up to the first blank line.
func ParseDCF(data []byte) (Fields, error) { return parseFields(data, false) }

// parseFields reads "Field: value" lines. A line of only spaces ends a DCF
// record, but in Python's metadata it is a continuation line: setuptools
// writes a License of several paragraphs exactly so, and every header after
// it would otherwise be lost (Requires-Python among them).
func parseFields(data []byte, blankContinues bool) (Fields, error) {
	f := Fields{}
	var last string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if blankContinues && line != "" && strings.TrimSpace(line) == "" && last != "" {
			f[last] += "\n"
			continue
		}
		if strings.TrimSpace(line) == "" {
			if len(f) > 0 {
				break // one record only
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last == "" {
				return nil, fmt.Errorf("line %d: continuation line without a field", n)
			}
			f[last] += "\n" + strings.TrimSpace(line)
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("line %d: expected \"Field: value\"", n)
		}
		if _, dup := f[name]; !dup {
			f[name] = strings.TrimSpace(value)
		}
		last = name
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return f, nil
}

// ParsePKGInfo parses Python core metadata (PKG-INFO, METADATA): headers
// up to the first blank line.
func ParsePKGInfo(data []byte) (Fields, error) {
	head, _, _ := bytes.Cut(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\n\n"))
	return parseFields(head, true)
}

// readDESCRIPTION reads dir/DESCRIPTION and checks Package and Version.
func ReadDESCRIPTION(dir string) (pkg, version string, err error) {
	data, err := readFileNoFollow(path.Join(dir, "DESCRIPTION"), 1<<20)
	if err != nil {
		return "", "", fmt.Errorf("DESCRIPTION: %w", err)
	}
	f, err := ParseDCF(data)
	if err != nil {
		return "", "", fmt.Errorf("DESCRIPTION: %w", err)
	}
	pkg, version = f["Package"], f["Version"]
	if pkg == "" || version == "" {
		return "", "", errors.New("DESCRIPTION: Package and Version are required")
	}
	if !validRPackage(pkg) {
		return "", "", fmt.Errorf("DESCRIPTION: Package %q is not a valid R package name", pkg)
	}
	if !validVersion(version) {
		return "", "", fmt.Errorf("DESCRIPTION: Version %q is not a valid version", version)
	}
	return pkg, version, nil
}

// PackageName reads the package name from the DESCRIPTION in dir (used to
// name R builders that were created without a name).
func PackageName(dir string) (string, error) {
	pkg, _, err := ReadDESCRIPTION(dir)
	return pkg, err
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

// ReadWheelMetadata reads *.dist-info/METADATA from a wheel.
func ReadWheelMetadata(f *os.File) (Fields, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	z, err := zip.NewReader(f, st.Size())
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
