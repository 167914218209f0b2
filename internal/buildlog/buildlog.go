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
	"sync"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
)

// Logs reads and moves build logs between the registry and the store.
type Logs struct {
	Registry *registry.Registry
	Store    store.Artifacts
}

// Move moves build id's log into the store, if the build finished and
// Redis still holds its log: put the compressed log, then name it in the
// record and drop Redis's copy in one script (registry.NameLog). moved is
// false when there was nothing to move. When the record or the log
// changed meanwhile, the stored copy is discarded and the log stays in
// Redis for a later Move; when the naming's outcome is unknown (Redis
// unreachable), the copy is left for the orphan sweep, never discarded
// under a record that may name it.
//
// A worker stores a build's log as it records the build's end (Put, with
// registry.UpdateBuildDroppingLogAs); Move is for the logs it could not.
func (l *Logs) Move(ctx context.Context, id int64) (moved bool, err error) {
	rec, text, err := l.Registry.FinishedLog(ctx, id)
	if err != nil {
		return false, err
	}
	b := rec.Build
	if !registry.Terminal(b.Status) || b.Log != nil || b.AttemptToken == 0 || len(text) == 0 {
		return false, nil
	}
	sl, err := l.Put(ctx, b.Source, cmp.Or(b.Package, b.Builder), b.ID, b.AttemptToken, text)
	if err != nil {
		return false, err
	}
	if _, err := l.Registry.NameLog(ctx, rec, int64(len(text)), sl); err != nil {
		if errors.Is(err, registry.ErrConflict) {
			l.Discard(context.WithoutCancel(ctx), b.Source, b.ID, sl)
		}
		return false, err
	}
	return true, nil
}

// Put stores text, the whole log of attempt token of build id, compressed
// beside that attempt's artifacts (under package element pkg), and returns
// what a record names it by. The stored copy is durable when Put returns.
func (l *Logs) Put(ctx context.Context, source, pkg string, id, token int64, text []byte) (registry.StoredLog, error) {
	var buf bytes.Buffer
	zw := gzips.Get().(*gzip.Writer)
	zw.Reset(&buf)
	_, err := zw.Write(text)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	gzips.Put(zw)
	if err != nil {
		return registry.StoredLog{}, fmt.Errorf("build %d log: compress: %w", id, err)
	}
	sl := registry.StoredLog{Package: pkg, Token: token, File: registry.LogFile, Size: int64(len(text))}
	a, err := l.Store.PutBytes(ctx, source, pkg, id, token, registry.Artifact{File: sl.File, Kind: "log"}, buf.Bytes())
	if err != nil {
		return registry.StoredLog{}, fmt.Errorf("build %d log: %w", id, err)
	}
	sl.Stored, sl.SHA256 = a.Size, a.SHA256
	return sl, nil
}

// Discard removes a stored log of build id that no record names (its
// naming was refused).
func (l *Logs) Discard(ctx context.Context, source string, id int64, sl registry.StoredLog) {
	_ = l.Store.Discard(ctx, source, sl.Package, id, sl.Token, []registry.Artifact{{File: sl.File}})
}

// gzips keeps gzip writers between logs: a new one allocates its
// compressor's state (about 800 KB) each time.
var gzips = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

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
