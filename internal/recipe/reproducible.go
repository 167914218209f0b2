package recipe

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
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
func fixRPackaged(epoch int64) func(data []byte) []byte {
	stamp := []byte("Packaged: " + time.Unix(epoch, 0).UTC().Format("2006-01-02 15:04:05") + " UTC;")
	return func(data []byte) []byte { return rPackaged.ReplaceAll(data, stamp) }
}

// maxMetadata bounds the member normalizeTarGz reads for the checks.
const maxMetadata = 1 << 20

// badTarballError is a tarball the build made that cannot be read, or
// lacks the member its checks need: the build's fault, not the worker's.
type badTarballError struct{ err error }

func (e *badTarballError) Error() string { return e.err.Error() }

// normalizeTarGz rewrites the tarball file as described above, streaming
// every member but one: the first regular member named want, which it
// reads (at most maxMetadata), passes through fix (when not nil), writes
// and returns, so that the checks of the result need no second pass over
// the tarball. The file is opened without following a symlink: the
// build, which could plant one, must not make the worker read a host file.
func normalizeTarGz(file string, epoch int64, want string, fix func([]byte) []byte) ([]byte, error) {
	bad := func(err error) ([]byte, error) {
		return nil, &badTarballError{fmt.Errorf("%s: %w", filepath.Base(file), err)}
	}
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return bad(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return bad(errors.New("not a regular file"))
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		return bad(err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".normalize-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	_ = tmp.Chmod(st.Mode().Perm())
	// The default level, as R and gzip use: the best one costs four times
	// the CPU (30 ms for a package of 700 files) for a fifth fewer bytes.
	zw, _ := gzip.NewWriterLevel(tmp, gzip.DefaultCompression)
	zw.ModTime = time.Unix(epoch, 0)
	tr, tw := tar.NewReader(zr), tar.NewWriter(zw)
	limit := time.Unix(epoch, 0)
	var wanted []byte
	found := false
	buf := make([]byte, 32<<10) // one copy buffer for all members, not one each
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return bad(err)
		}
		var data []byte
		read := hdr.Typeflag == tar.TypeReg && !found && path.Clean(hdr.Name) == want
		if read {
			if hdr.Size > maxMetadata {
				return bad(fmt.Errorf("%s is larger than %d bytes", want, maxMetadata))
			}
			if data, err = io.ReadAll(tr); err != nil {
				return bad(err)
			}
			if fix != nil {
				data = fix(data)
			}
			hdr.Size, wanted, found = int64(len(data)), data, true
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
			return nil, fmt.Errorf("%s: %s: %w", filepath.Base(file), hdr.Name, err)
		}
		src := &readErr{r: tr}
		if read {
			_, err = tw.Write(data)
		} else {
			_, err = io.CopyBuffer(tw, src, buf)
		}
		if src.err != nil {
			return bad(src.err)
		}
		if err != nil {
			return nil, err
		}
	}
	if !found {
		return bad(fmt.Errorf("no %s", want))
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	return wanted, os.Rename(tmp.Name(), file)
}

// readErr remembers its reader's error, which io.Copy does not tell apart
// from the writer's.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// sourceDateEnv is SOURCE_DATE_EPOCH for the commit's time.
func sourceDateEnv(t time.Time) string {
	return "SOURCE_DATE_EPOCH=" + strconv.FormatInt(sourceDateEpoch(t), 10)
}
