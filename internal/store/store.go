// Package store keeps build artifacts on disk under FileStorage.Location,
// laid out as <source>/<package>/<build id>-<attempt token>-<file>, so
// that every build's files stay reachable by build id, two attempts of one
// build never write the same file, and a shared volume can serve a fleet.
// One directory per package, not per build or attempt: a directory costs
// a mkdir and a sync for every build. Earlier layouts are still read:
// <build id>/<attempt token>/<file>, and <build id>/<file> for builds
// recorded before attempt tokens. Which attempt's files are served is the
// build record's choice (its attempt_token), made in one fenced write by
// internal/registry.
//
// It copies files in without following symlinks and hands them out by
// exact name; it does not decide which builds a package index serves.
package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// Store is a directory of artifacts.
type Store struct {
	Root string
}

// New returns a store rooted at dir, creating it.
func New(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("artifact store: %w", err)
	}
	return &Store{Root: dir}, nil
}

// Put copies the artifacts a build made in from (each named by File and
// Kind) into the store as one attempt's (token) of the build, and returns
// them with their Size and SHA256. When it returns, the files and the
// directory entries that lead to them are on stable storage, so a record
// that names them may be written.
//
// The files get their final names at once: the names are the attempt's
// own (a later attempt gets another token) and nobody reads them before a
// build record names the attempt, which happens only after Put. A Put
// that fails removes what it wrote.
func (s *Store) Put(source, pkg string, buildID, token int64, from string, arts []registry.Artifact) (_ []registry.Artifact, err error) {
	dir, err := s.pkgDir(source, pkg)
	if err != nil {
		return nil, err
	}
	prefix := attemptPrefix(buildID, token)
	var changed []string // directories with a new entry, to sync
	if err := s.mkdirs(dir, &changed); err != nil {
		return nil, fmt.Errorf("artifact store: %w", err)
	}
	out := make([]registry.Artifact, 0, len(arts))
	defer func() {
		if err != nil {
			_ = s.Discard(source, pkg, buildID, token, out)
		}
	}()
	for _, a := range arts {
		if !plainName(a.File) {
			return nil, fmt.Errorf("artifact store: bad artifact name %q", a.File)
		}
		stored, err := copyIn(filepath.Join(from, a.File), filepath.Join(dir, prefix+a.File))
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", a.File, err)
		}
		stored.File, stored.Kind = a.File, a.Kind
		out = append(out, stored)
	}
	if len(out) > 0 {
		changed = append(changed, dir)
	}
	// The files' data were synced as they were written; now their names
	// and any new directory's. (On ext4 and XFS the files' syncs already
	// committed these, so these syncs find nothing left to write.)
	for _, d := range changed {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("artifact store: %w", err)
		}
	}
	return out, nil
}

// mkdirs makes dir and its missing parents below the store's root, and
// adds to changed each directory that got a new entry.
func (s *Store) mkdirs(dir string, changed *[]string) error {
	st, err := os.Stat(dir)
	if err == nil && st.IsDir() {
		return nil
	}
	err = os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrNotExist) && dir != s.Root && filepath.Dir(dir) != dir {
		if err := s.mkdirs(filepath.Dir(dir), changed); err != nil {
			return err
		}
		err = os.Mkdir(dir, 0o755)
	}
	switch {
	case err == nil:
		*changed = append(*changed, filepath.Dir(dir))
		return nil
	case errors.Is(err, fs.ErrExist):
		if st, serr := os.Stat(dir); serr != nil || !st.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	return err
}

// syncDir makes dir's entries durable. (syscall, not os.Open: an
// *os.File would try to register the directory with the poller first.)
func syncDir(dir string) error {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	err = syscall.Fsync(fd)
	if cerr := syscall.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return &fs.PathError{Op: "fsync", Path: dir, Err: err}
	}
	return nil
}

// plainName reports whether file names a visible file in a directory, not
// a path.
func plainName(file string) bool {
	return file != "" && file == filepath.Base(file) && !strings.HasPrefix(file, ".")
}

// Discard removes the files arts of an attempt whose record was refused
// (a newer attempt of the build had taken over): nothing refers to them.
func (s *Store) Discard(source, pkg string, buildID, token int64, arts []registry.Artifact) error {
	dir, err := s.pkgDir(source, pkg)
	if err != nil || token == 0 {
		return err
	}
	var errs []error
	for _, a := range arts {
		if !plainName(a.File) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, attemptPrefix(buildID, token)+a.File)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Open returns an artifact of the attempt (token) a build record names.
func (s *Store) Open(source, pkg string, buildID, token int64, file string) (*os.File, error) {
	if !plainName(file) {
		return nil, fmt.Errorf("artifact %q: %w", file, os.ErrNotExist)
	}
	dir, err := s.pkgDir(source, pkg)
	if err != nil {
		return nil, err
	}
	id := strconv.FormatInt(buildID, 10)
	if token == 0 {
		return openFile(filepath.Join(dir, id, file))
	}
	f, err := openFile(filepath.Join(dir, attemptPrefix(buildID, token)+file))
	if errors.Is(err, fs.ErrNotExist) {
		// Stored before one directory per package.
		f, err = openFile(filepath.Join(dir, id, strconv.FormatInt(token, 10), file))
	}
	return f, err
}

func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}

// attemptPrefix starts the names of an attempt's files.
func attemptPrefix(buildID, token int64) string {
	return strconv.FormatInt(buildID, 10) + "-" + strconv.FormatInt(token, 10) + "-"
}

func (s *Store) pkgDir(source, pkg string) (string, error) {
	for _, part := range []string{source, pkg} {
		if part == "" || part != filepath.Base(part) || part == "." || part == ".." {
			return "", fmt.Errorf("artifact store: bad path element %q", part)
		}
	}
	return filepath.Join(s.Root, source, pkg), nil
}

// copyIn copies the regular file src to the new file dst, synced, and
// returns its size and digest.
func copyIn(src, dst string) (registry.Artifact, error) {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return registry.Artifact{}, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return registry.Artifact{}, err
	}
	if !st.Mode().IsRegular() {
		return registry.Artifact{}, errors.New("not a regular file")
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return registry.Artifact{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), in)
	if err == nil {
		err = f.Chmod(0o644) // whatever the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(dst)
		return registry.Artifact{}, err
	}
	return registry.Artifact{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
