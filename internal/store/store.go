// Package store keeps build artifacts on disk under FileStorage.Location,
// laid out as <source>/<package>/<build id>/<attempt token>/<file> (builds
// recorded before attempt tokens: <build id>/<file>), so that every
// build's files stay reachable by build id, two attempts of one build
// never write the same file, and a shared volume can serve a fleet. Which
// attempt's files are served is the build record's choice (its
// attempt_token), made in one fenced write by internal/registry.
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
// Kind) into the directory of one attempt (token) of the build, and
// returns them with their Size and SHA256. When it returns, the files and
// the directory entries that lead to them are on stable storage, so a
// record that names them may be written.
//
// The files get their final names at once: the attempt's directory is its
// own (a later attempt gets another token) and nobody reads it before a
// build record names the attempt, which happens only after Put. A Put
// that fails removes what it wrote.
func (s *Store) Put(source, pkg string, buildID, token int64, from string, arts []registry.Artifact) (_ []registry.Artifact, err error) {
	dir, err := s.dir(source, pkg, buildID, token)
	if err != nil {
		return nil, err
	}
	var changed []string // directories with a new entry, to sync
	if err := s.mkdirs(dir, &changed); err != nil {
		return nil, fmt.Errorf("artifact store: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	out := make([]registry.Artifact, 0, len(arts))
	for _, a := range arts {
		if !plainName(a.File) {
			return nil, fmt.Errorf("artifact store: bad artifact name %q", a.File)
		}
		stored, err := copyIn(filepath.Join(from, a.File), dir)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", a.File, err)
		}
		stored.Kind = a.Kind
		out = append(out, stored)
	}
	if len(out) > 0 {
		changed = append(changed, dir)
	}
	// The files' data were synced as they were written; now their names
	// and the new directories' names. (On ext4 and XFS the files' syncs
	// already committed these, so these syncs find nothing left to write.)
	for _, d := range changed {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("artifact store: %w", err)
		}
	}
	return out, nil
}

// mkdirs makes dir and its missing parents below the store's root (mkdir
// first, as the directory of a new attempt is almost always new) and adds
// to changed each directory that got a new entry.
func (s *Store) mkdirs(dir string, changed *[]string) error {
	err := os.Mkdir(dir, 0o755)
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
		if st, serr := os.Lstat(dir); serr != nil || !st.IsDir() {
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

// Discard removes the files of an attempt whose record was refused (a
// newer attempt of the build had taken over): nothing refers to them.
func (s *Store) Discard(source, pkg string, buildID, token int64) error {
	if token == 0 {
		return nil
	}
	dir, err := s.dir(source, pkg, buildID, token)
	if err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// Open returns an artifact of the attempt (token) a build record names.
func (s *Store) Open(source, pkg string, buildID, token int64, file string) (*os.File, error) {
	if !plainName(file) {
		return nil, fmt.Errorf("artifact %q: %w", file, os.ErrNotExist)
	}
	dir, err := s.dir(source, pkg, buildID, token)
	if err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(dir, file), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}

func (s *Store) dir(source, pkg string, buildID, token int64) (string, error) {
	for _, part := range []string{source, pkg} {
		if part == "" || part != filepath.Base(part) || part == "." || part == ".." {
			return "", fmt.Errorf("artifact store: bad path element %q", part)
		}
	}
	dir := filepath.Join(s.Root, source, pkg, strconv.FormatInt(buildID, 10))
	if token == 0 {
		return dir, nil
	}
	return filepath.Join(dir, strconv.FormatInt(token, 10)), nil
}

func copyIn(src, dir string) (registry.Artifact, error) {
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
	name := filepath.Base(src)
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
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
		return registry.Artifact{}, err
	}
	return registry.Artifact{File: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
