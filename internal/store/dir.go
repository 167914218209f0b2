package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// Dir keeps artifacts in a directory (FileStorage.Location), one
// directory per package, not per build or attempt: a directory costs a
// mkdir and a sync for every build. Earlier layouts are still read:
// <build id>/<attempt token>/<file>, and <build id>/<file> for builds
// recorded before attempt tokens. A shared volume can serve a fleet.
type Dir struct {
	Root string
}

var _ Artifacts = (*Dir)(nil)

// NewDir returns a store rooted at dir, creating it.
func NewDir(dir string) (*Dir, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("artifact store: %w", err)
	}
	return &Dir{Root: dir}, nil
}

func (s *Dir) String() string { return "directory " + s.Root }

// Put implements Artifacts: when it returns, the files and the directory
// entries that lead to them are on stable storage.
//
// The files get their final names at once: the names are the attempt's
// own (a later attempt gets another token) and nobody reads them before a
// build record names the attempt, which happens only after Put. A Put
// that fails removes what it wrote.
func (s *Dir) Put(ctx context.Context, source, pkg string, buildID, token int64, from string, arts []registry.Artifact) ([]registry.Artifact, error) {
	return s.put(ctx, source, pkg, buildID, token, arts, fromDir(from))
}

// PutBytes implements Artifacts, as Put does.
func (s *Dir) PutBytes(ctx context.Context, source, pkg string, buildID, token int64, a registry.Artifact, data []byte) (registry.Artifact, error) {
	return one(s.put(ctx, source, pkg, buildID, token, []registry.Artifact{a}, inMemory(data)))
}

func (s *Dir) put(ctx context.Context, source, pkg string, buildID, token int64, arts []registry.Artifact, src func(registry.Artifact) content) (_ []registry.Artifact, err error) {
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
			_ = s.Discard(ctx, source, pkg, buildID, token, out)
		}
	}()
	for _, a := range arts {
		if !plainName(a.File) {
			return nil, fmt.Errorf("artifact store: bad artifact name %q", a.File)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		stored, err := copyIn(src(a), filepath.Join(dir, prefix+a.File))
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", a.File, err)
		}
		// The recipe's description (kind, platform, tags) stays; the
		// store adds what it measured.
		a.Size, a.SHA256 = stored.Size, stored.SHA256
		out = append(out, a)
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
func (s *Dir) mkdirs(dir string, changed *[]string) error {
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

// Discard implements Artifacts.
func (s *Dir) Discard(_ context.Context, source, pkg string, buildID, token int64, arts []registry.Artifact) error {
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

// Open implements Artifacts.
func (s *Dir) Open(_ context.Context, source, pkg string, buildID, token int64, file string) (File, error) {
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

// osFile is an open artifact on disk.
type osFile struct {
	*os.File
	st fs.FileInfo
}

func (f osFile) Size() int64        { return f.st.Size() }
func (f osFile) ModTime() time.Time { return f.st.ModTime() }

func openFile(path string) (File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return osFile{f, st}, nil
}

// Walk implements Artifacts: the files named by an attempt in each
// <source>/<package> directory. A file being written is already under
// its final name; the sweep's grace period covers it.
func (s *Dir) Walk(ctx context.Context, fn func(Stored) error) error {
	sources, err := os.ReadDir(s.Root)
	if err != nil {
		return fmt.Errorf("artifact store: %w", err)
	}
	for _, src := range sources {
		if !src.IsDir() {
			continue
		}
		pkgs, err := os.ReadDir(filepath.Join(s.Root, src.Name()))
		if err != nil {
			return fmt.Errorf("artifact store: %w", err)
		}
		for _, pkg := range pkgs {
			if !pkg.IsDir() {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			files, err := os.ReadDir(filepath.Join(s.Root, src.Name(), pkg.Name()))
			if err != nil {
				return fmt.Errorf("artifact store: %w", err)
			}
			for _, e := range files {
				st, ok := parseName(src.Name() + "/" + pkg.Name() + "/" + e.Name())
				if !ok || !e.Type().IsRegular() {
					continue
				}
				info, err := e.Info()
				if errors.Is(err, fs.ErrNotExist) {
					continue // removed meanwhile
				}
				if err != nil {
					return fmt.Errorf("artifact store: %w", err)
				}
				st.Size, st.ModTime = info.Size(), info.ModTime()
				if err := fn(st); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Remove implements Artifacts.
func (s *Dir) Remove(_ context.Context, f Stored) error {
	if _, ok := parseName(f.Name()); !ok {
		return fmt.Errorf("artifact store: %q is no attempt's file", f.Name())
	}
	err := os.Remove(filepath.Join(s.Root, filepath.FromSlash(f.Name())))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("artifact store: %w", err)
	}
	return nil
}

// Check implements Artifacts: a probe file created, synced and removed.
func (s *Dir) Check(context.Context) error {
	f, err := os.CreateTemp(s.Root, ".probe-*")
	if err == nil {
		err = f.Sync()
		f.Close()
		if rerr := os.Remove(f.Name()); err == nil {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("artifact store %s is not writable: %w", s.Root, err)
	}
	return nil
}

func (s *Dir) pkgDir(source, pkg string) (string, error) {
	if err := checkElems(source, pkg); err != nil {
		return "", err
	}
	return filepath.Join(s.Root, source, pkg), nil
}

// openRegular opens src, a build's output, for reading: a regular file,
// never a symlink a build left to point elsewhere.
func openRegular(src string) (*os.File, os.FileInfo, error) {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := in.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		in.Close()
		return nil, nil, err
	}
	return in, st, nil
}

// copyIn copies src to the new file dst, synced, and returns its size and
// digest.
func copyIn(src content, dst string) (registry.Artifact, error) {
	in, _, err := src.open()
	if err != nil {
		return registry.Artifact{}, err
	}
	defer in.Close()
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
