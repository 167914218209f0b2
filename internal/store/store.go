// Package store keeps build artifacts, each attempt's files under its own
// names, <source>/<package>/<build id>-<attempt token>-<file>, in a
// directory (Dir, FileStorage.Location) or an S3 bucket (Bucket,
// S3Storage.*): two attempts of one build never write the same file, and
// the store never overwrites one (a collision is an error naming the
// file). Which attempt's files are served is the build record's choice
// (its attempt_token), made in one fenced write by internal/registry after
// Put returned; readers open only what a record names and never list the
// store to serve. The one listing, Walk, is for the orphan sweep.
//
// It copies files in without following symlinks and hands them out by
// exact name; it does not decide which builds a package index serves.
package store

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// Artifacts is what keeps the artifacts: the pipeline puts and discards
// attempts, the API and the index open files a record names, the sweep
// walks and removes orphans.
type Artifacts interface {
	// Put copies the artifacts a build made in directory from (each named
	// by File and Kind) into the store as one attempt's (token) of the
	// build, and returns them with the Size and SHA256 of the bytes
	// stored. When it returns they are durable, so a record that names
	// them may be written. A Put that fails removes what it wrote.
	Put(ctx context.Context, source, pkg string, buildID, token int64, from string, arts []registry.Artifact) ([]registry.Artifact, error)
	// PutBytes is Put for one file whose bytes are in memory (a finished
	// build's compressed log): no file to copy them from.
	PutBytes(ctx context.Context, source, pkg string, buildID, token int64, a registry.Artifact, data []byte) (registry.Artifact, error)
	// Open returns an artifact of the attempt (token) a build record
	// names; a missing one is an error matching fs.ErrNotExist.
	Open(ctx context.Context, source, pkg string, buildID, token int64, file string) (File, error)
	// Discard removes the files arts of an attempt whose record was
	// refused or never written: nothing refers to them.
	Discard(ctx context.Context, source, pkg string, buildID, token int64, arts []registry.Artifact) error
	// Walk calls fn with every attempt's file in the store (earlier
	// layouts are not attempts' and are left out), in no set order.
	Walk(ctx context.Context, fn func(Stored) error) error
	// Remove deletes one walked file.
	Remove(ctx context.Context, f Stored) error
	// Check proves the store is reachable and writable (it writes and
	// deletes a probe), for the API's and the worker's startup.
	Check(ctx context.Context) error
	// String names the store for logs (a directory, or bucket and
	// endpoint), never a credential.
	String() string
}

// File is an open artifact. Read and Seek let http.ServeContent answer
// HEAD and Range requests; ReadAt lets a wheel's zip index be read.
type File interface {
	io.ReadSeekCloser
	io.ReaderAt
	Size() int64
	ModTime() time.Time
}

// Presigner is an Artifacts that can hand a client a time-limited URL of
// a file instead of its bytes (Storage.S3Redirect).
type Presigner interface {
	PresignGet(ctx context.Context, source, pkg string, buildID, token int64, file string) (string, error)
}

// Stored is one attempt's file found by Walk.
type Stored struct {
	Source, Package string
	Build, Token    int64
	File            string
	Size            int64
	ModTime         time.Time
}

// Name is the file's name in the store, relative to its root or prefix.
func (s Stored) Name() string {
	return s.Source + "/" + s.Package + "/" + attemptPrefix(s.Build, s.Token) + s.File
}

// attemptPrefix starts the names of an attempt's files.
func attemptPrefix(buildID, token int64) string {
	return strconv.FormatInt(buildID, 10) + "-" + strconv.FormatInt(token, 10) + "-"
}

// parseName reads <source>/<package>/<build>-<token>-<file>, the only
// layout Put writes; ok is false for anything else.
func parseName(name string) (s Stored, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 3 || checkElems(parts[0], parts[1]) != nil {
		return s, false
	}
	b, rest, ok1 := strings.Cut(parts[2], "-")
	t, file, ok2 := strings.Cut(rest, "-")
	if !ok1 || !ok2 || !plainName(file) {
		return s, false
	}
	build, err1 := strconv.ParseInt(b, 10, 64)
	token, err2 := strconv.ParseInt(t, 10, 64)
	if err1 != nil || err2 != nil || build <= 0 || token <= 0 || strconv.FormatInt(build, 10) != b || strconv.FormatInt(token, 10) != t {
		return s, false
	}
	return Stored{Source: parts[0], Package: parts[1], Build: build, Token: token, File: file}, true
}

// plainName reports whether file names a visible file in a directory, not
// a path.
func plainName(file string) bool {
	return file != "" && file == filepath.Base(file) && !strings.HasPrefix(file, ".")
}

// checkElems refuses a source or package that is not one plain path
// element.
func checkElems(source, pkg string) error {
	for _, part := range []string{source, pkg} {
		if part == "" || part != filepath.Base(part) || part == "." || part == ".." || strings.Contains(part, "/") {
			return &badNameError{part}
		}
	}
	return nil
}

type badNameError struct{ elem string }

func (e *badNameError) Error() string {
	return "artifact store: bad path element " + strconv.Quote(e.elem)
}

// content is where the bytes of a file Put stores come from: a regular
// file among the build's results (path), or memory (data, for PutBytes).
type content struct {
	path string
	data []byte
}

// open returns the content's reader and its size.
func (c content) open() (io.ReadCloser, int64, error) {
	if c.path == "" {
		return io.NopCloser(bytes.NewReader(c.data)), int64(len(c.data)), nil
	}
	in, st, err := openRegular(c.path)
	if err != nil {
		return nil, 0, err
	}
	return in, st.Size(), nil
}

// fromDir names the contents of arts in directory from.
func fromDir(from string) func(registry.Artifact) content {
	return func(a registry.Artifact) content { return content{path: filepath.Join(from, a.File)} }
}

// inMemory names data as the content of every artifact asked for (one).
func inMemory(data []byte) func(registry.Artifact) content {
	return func(registry.Artifact) content { return content{data: data} }
}

// one is the single artifact a put of one stored, or its error.
func one(out []registry.Artifact, err error) (registry.Artifact, error) {
	if err != nil {
		return registry.Artifact{}, err
	}
	return out[0], nil
}
