// Package buildlog moves a finished build's log out of Redis into the
// artifact store, gzip-compressed beside its attempt's artifacts, and
// reads a build's log wherever it is: Redis's live tail while the build
// runs, the stored file once it finished. Redis's memory then holds a
// finished build's record only, not its log (up to Git.BuildLogSize).
//
// It does not decide which builds are kept (internal/retention does) nor
// stream a running build's output (internal/pipeline's logWriter appends
// it through internal/registry).
package buildlog

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
)

// Logs reads and moves build logs between the registry and the store.
type Logs struct {
	Registry *registry.Registry
	Store    store.Artifacts
	// TempDir is where a log is compressed before the store copies it in
	// ("": os.TempDir()).
	TempDir string
}

// Move moves build id's log into the store, if the build finished and
// Redis still holds its log: put the compressed log, then name it in the
// record and drop Redis's copy in one script (registry.NameLog). moved is
// false when there was nothing to move. When the record or the log
// changed meanwhile, the stored copy is discarded and the log stays in
// Redis for a later Move; when the naming's outcome is unknown (Redis
// unreachable), the copy is left for the orphan sweep, never discarded
// under a record that may name it.
func (l *Logs) Move(ctx context.Context, id int64) (moved bool, err error) {
	rec, text, err := l.Registry.FinishedLog(ctx, id)
	if err != nil {
		return false, err
	}
	b := rec.Build
	if !registry.Terminal(b.Status) || b.Log != nil || b.AttemptToken == 0 || len(text) == 0 {
		return false, nil
	}
	sl := registry.StoredLog{Package: cmp.Or(b.Package, b.Builder), Token: b.AttemptToken, File: registry.LogFile, Size: int64(len(text))}
	stored, err := l.put(ctx, b, sl, text)
	if err != nil {
		return false, err
	}
	sl.Stored, sl.SHA256 = stored.Size, stored.SHA256
	if _, err := l.Registry.NameLog(ctx, rec, int64(len(text)), sl); err != nil {
		if errors.Is(err, registry.ErrConflict) {
			_ = l.Store.Discard(context.WithoutCancel(ctx), b.Source, sl.Package, b.ID, sl.Token, []registry.Artifact{{File: sl.File}})
		}
		return false, err
	}
	return true, nil
}

// put compresses text into a file of its own and has the store copy it
// in; it returns the stored file's size and sha256.
func (l *Logs) put(ctx context.Context, b *registry.Build, sl registry.StoredLog, text []byte) (registry.Artifact, error) {
	if l.TempDir != "" {
		if err := os.MkdirAll(l.TempDir, 0o700); err != nil {
			return registry.Artifact{}, fmt.Errorf("build %d log: %w", b.ID, err)
		}
	}
	dir, err := os.MkdirTemp(l.TempDir, "pkgfleet-log-")
	if err != nil {
		return registry.Artifact{}, fmt.Errorf("build %d log: %w", b.ID, err)
	}
	defer os.RemoveAll(dir)
	f, err := os.Create(filepath.Join(dir, sl.File))
	if err != nil {
		return registry.Artifact{}, fmt.Errorf("build %d log: %w", b.ID, err)
	}
	zw := gzip.NewWriter(f)
	_, err = zw.Write(text)
	err = errors.Join(err, zw.Close(), f.Close())
	if err != nil {
		return registry.Artifact{}, fmt.Errorf("build %d log: compress: %w", b.ID, err)
	}
	arts, err := l.Store.Put(ctx, b.Source, sl.Package, b.ID, sl.Token, dir, []registry.Artifact{{File: sl.File, Kind: "log"}})
	if err != nil {
		return registry.Artifact{}, fmt.Errorf("build %d log: %w", b.ID, err)
	}
	return arts[0], nil
}

// Read returns build b's log from byte offset on, from Redis while it
// holds it, else from the store. b is the record as the caller read it;
// when Redis has nothing for a finished build whose record did not yet
// name a stored log, the record is read again: the log may have moved in
// between.
func (l *Logs) Read(ctx context.Context, b *registry.Build, offset int64) ([]byte, error) {
	if b.Log == nil {
		text, err := l.Registry.Log(ctx, b.ID, offset)
		if err != nil || len(text) > 0 || !registry.Terminal(b.Status) {
			return text, err
		}
		if b, err = l.Registry.Build(ctx, b.ID); err != nil || b.Log == nil {
			return nil, err
		}
	}
	return l.readStored(ctx, b, offset)
}

func (l *Logs) readStored(ctx context.Context, b *registry.Build, offset int64) ([]byte, error) {
	sl := b.Log
	f, err := l.Store.Open(ctx, b.Source, sl.Package, b.ID, sl.Token, sl.File)
	if err != nil {
		return nil, fmt.Errorf("build %d log: %w", b.ID, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("build %d log: %w", b.ID, err)
	}
	if offset >= sl.Size {
		return nil, nil
	}
	if _, err := io.CopyN(io.Discard, zr, offset); err != nil {
		return nil, fmt.Errorf("build %d log: %w", b.ID, err)
	}
	var buf bytes.Buffer
	buf.Grow(int(sl.Size - offset))
	if _, err := io.Copy(&buf, zr); err != nil {
		return nil, fmt.Errorf("build %d log: %w", b.ID, err)
	}
	return buf.Bytes(), nil
}
