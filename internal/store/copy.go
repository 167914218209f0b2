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

	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// Copied counts what Copy did.
type Copied struct {
	Copied  int // files put into the destination
	Present int // files the destination already had (an earlier run)
}

// Copy copies every artifact the build records name from one store into
// another (a directory into a bucket, for a move to S3), under the same
// attempt's names. Each file is verified against its record before it
// is put (its sha256 and size as read from `from`) and after (as stored
// in `to`); a file that does not match stops the copy, naming it. It is
// idempotent and resumable: a file the destination already has with the
// recorded size is left alone (the destination never overwrites, and an
// S3 object exists only once its upload completed). Files go through a
// staging directory under tmp, one build at a time.
func Copy(ctx context.Context, from, to Artifacts, builds []*registry.Build, tmp string, progress func(b *registry.Build, a registry.Artifact, present bool)) (Copied, error) {
	var n Copied
	for _, whole := range builds {
		for _, b := range byAttempt(whole) {
			if err := copyAttempt(ctx, from, to, b, tmp, progress, &n); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// byAttempt lists b's stored files by the attempt's names they have: its
// artifacts, then its log (a finished build's, under the log's package
// element and token), each as a build of its own.
func byAttempt(b *registry.Build) []*registry.Build {
	out := []*registry.Build{b}
	if l := b.Log; l != nil {
		v := *b
		v.Package, v.AttemptToken = l.Package, l.Token
		v.Artifacts = []registry.Artifact{{File: l.File, Kind: "log", Size: l.Stored, SHA256: l.SHA256}}
		out = append(out, &v)
	}
	return out
}

// copyAttempt copies the artifacts of b that to lacks, counting in n.
func copyAttempt(ctx context.Context, from, to Artifacts, b *registry.Build, tmp string, progress func(b *registry.Build, a registry.Artifact, present bool), n *Copied) error {
	if len(b.Artifacts) == 0 {
		return nil
	}
	var put []registry.Artifact
	for _, a := range b.Artifacts {
		f, err := to.Open(ctx, b.Source, b.Package, b.ID, b.AttemptToken, a.File)
		if err == nil {
			size := f.Size()
			f.Close()
			if size != a.Size {
				return fmt.Errorf("build %d: %s is already in the %s with %d bytes, not the recorded %d", b.ID, a.File, to, size, a.Size)
			}
			n.Present++
			if progress != nil {
				progress(b, a, true)
			}
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("build %d: %w", b.ID, err)
		}
		put = append(put, a)
	}
	if len(put) == 0 {
		return nil
	}
	if err := copyBuild(ctx, from, to, b, put, tmp); err != nil {
		return err
	}
	n.Copied += len(put)
	if progress != nil {
		for _, a := range put {
			progress(b, a, false)
		}
	}
	return nil
}

// copyBuild stages arts of b from `from`, verified, and puts them in to.
func copyBuild(ctx context.Context, from, to Artifacts, b *registry.Build, arts []registry.Artifact, tmp string) error {
	dir, err := os.MkdirTemp(tmp, "pkgfleet-copy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, a := range arts {
		if err := stage(ctx, from, b, a, dir); err != nil {
			return err
		}
	}
	stored, err := to.Put(ctx, b.Source, b.Package, b.ID, b.AttemptToken, dir, arts)
	if err != nil {
		return fmt.Errorf("build %d: %w", b.ID, err)
	}
	for i, s := range stored {
		if s.SHA256 != arts[i].SHA256 || s.Size != arts[i].Size {
			_ = to.Discard(ctx, b.Source, b.Package, b.ID, b.AttemptToken, stored)
			return fmt.Errorf("build %d: %s was stored with sha256 %s (%d bytes), not the recorded %s (%d bytes)", b.ID, s.File, s.SHA256, s.Size, arts[i].SHA256, arts[i].Size)
		}
	}
	return nil
}

// stage copies one artifact of b into dir and checks it against the
// record.
func stage(ctx context.Context, from Artifacts, b *registry.Build, a registry.Artifact, dir string) error {
	in, err := from.Open(ctx, b.Source, b.Package, b.ID, b.AttemptToken, a.File)
	if err != nil {
		return fmt.Errorf("build %d: %s: %w", b.ID, a.File, err)
	}
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(dir, a.File), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(out, h), in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("build %d: %s: %w", b.ID, a.File, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != a.SHA256 || size != a.Size {
		return fmt.Errorf("build %d: %s in the %s has sha256 %s (%d bytes), not the recorded %s (%d bytes)", b.ID, a.File, from, sum, size, a.SHA256, a.Size)
	}
	return nil
}
