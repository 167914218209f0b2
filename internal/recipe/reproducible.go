package recipe

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Building one commit twice gives the same bytes. Every tool gets
// SOURCE_DATE_EPOCH = the commit's time and a checkout whose mtimes are
// that time (internal/git). Wheels are then reproducible: setuptools'
// bdist_wheel, hatchling, flit and poetry-core stamp zip entries with
// SOURCE_DATE_EPOCH. Source tarballs are not: setuptools 66 (Debian 12's)
// stamps the files it generates (PKG-INFO, setup.cfg, *.egg-info) and the
// gzip header with the time of the build, and R CMD build (R 4.2) copies
// the package with fresh mtimes, writes the build time into DESCRIPTION's
// Packaged field and the gzip header. So each .tar.gz is rewritten once
// the tool is done, as strip-nondeterminism does: member mtimes clamped
// to the commit's time, owners 0/0 "root", the gzip header's time the
// commit's, and (R) the Packaged field's time the commit's. Member order,
// names, modes and contents are kept.

// sourceDateFallback is SOURCE_DATE_EPOCH when the commit's time is not
// known (sandbox exec): 1980-01-01, the earliest a zip can record.
const sourceDateFallback = 315532800

func sourceDateEpoch(t time.Time) int64 {
	if t.IsZero() || t.Unix() < sourceDateFallback {
		return sourceDateFallback
	}
	return t.Unix()
}

// rPackaged is DESCRIPTION's Packaged field: "2026-12-02 05:19:24 UTC; user".
var rPackaged = regexp.MustCompile(`(?m)^Packaged: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]+;`)

// fixRPackaged sets the time in DESCRIPTION's Packaged field to epoch.
func fixRPackaged(epoch int64) func(name string, data []byte) []byte {
	stamp := []byte("Packaged: " + time.Unix(epoch, 0).UTC().Format("2006-01-02 15:04:05") + " UTC;")
	return func(name string, data []byte) []byte {
		if strings.Count(name, "/") != 1 || path.Base(name) != "DESCRIPTION" {
			return data // only the package's own DESCRIPTION, pkg/DESCRIPTION
		}
		return rPackaged.ReplaceAll(data, stamp)
	}
}

// normalizeTarGz rewrites the tarball file as described above; fix, if
// not nil, may change a regular member's content.
func normalizeTarGz(file string, epoch int64, fix func(name string, data []byte) []byte) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(file), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".normalize-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if st, err := f.Stat(); err == nil {
		_ = tmp.Chmod(st.Mode().Perm())
	}
	zw, _ := gzip.NewWriterLevel(tmp, gzip.BestCompression)
	zw.ModTime = time.Unix(epoch, 0)
	tr, tw := tar.NewReader(zr), tar.NewWriter(zw)
	limit := time.Unix(epoch, 0)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(file), err)
		}
		var data []byte
		if hdr.Typeflag == tar.TypeReg {
			if data, err = io.ReadAll(tr); err != nil {
				return fmt.Errorf("%s: %w", filepath.Base(file), err)
			}
			if fix != nil {
				data = fix(hdr.Name, data)
			}
			hdr.Size = int64(len(data))
		}
		if hdr.ModTime.After(limit) {
			hdr.ModTime = limit
		}
		hdr.ModTime = hdr.ModTime.Truncate(time.Second)
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "root", "root"
		for _, k := range []string{"mtime", "atime", "ctime", "uid", "gid", "uname", "gname"} {
			delete(hdr.PAXRecords, k)
		}
		hdr.Format = tar.FormatUnknown // the writer picks the smallest format that fits: a function of the header
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %s: %w", filepath.Base(file), hdr.Name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// sourceDateEnv is SOURCE_DATE_EPOCH for the commit's time.
func sourceDateEnv(t time.Time) string {
	return "SOURCE_DATE_EPOCH=" + strconv.FormatInt(sourceDateEpoch(t), 10)
}
