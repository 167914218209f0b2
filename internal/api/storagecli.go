package api

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
)

// StorageCommand runs the API's storage entry point:
//
//	pkgfleet-api [-config FILE] storage copy --to s3
//
// copy moves a fleet to S3: it copies every artifact the build records
// name from FileStorage.Location into the S3Storage bucket, verifying
// each sha256 against its record; run it again to resume or to check
// (files already there are left). Then set Storage.Default = s3. It
// returns the process exit status.
func StorageCommand(ctx context.Context, cfg *config.Config, args []string, stdout, stderr io.Writer) int {
	const usage = "usage: pkgfleet-api [-config FILE] storage copy --to s3"
	if len(args) == 0 || args[0] != "copy" {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("pkgfleet-api storage copy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	to := fs.String("to", "", "where to copy the artifacts: s3 (the S3Storage bucket)")
	if err := fs.Parse(args[1:]); err != nil || *to != "s3" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	if err := storageCopy(ctx, cfg, stdout); err != nil {
		fmt.Fprintln(stderr, "pkgfleet-api storage copy:", err)
		return 1
	}
	return 0
}

func storageCopy(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	if cfg.S3Storage.Bucket == "" {
		return fmt.Errorf("S3Storage.Bucket is not set")
	}
	from, err := store.NewDir(cfg.FileStorage.Location)
	if err != nil {
		return err
	}
	to, err := store.NewBucket(ctx, cfg.S3Storage)
	if err != nil {
		return err
	}
	if err := to.Check(ctx); err != nil {
		return err
	}
	rdb, err := redisconn.Client(cfg.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	builds, err := registry.New(rdb).Builds(ctx, registry.Filter{Status: registry.StatusSucceeded, Limit: math.MaxInt})
	if err != nil {
		return err
	}
	n, err := store.Copy(ctx, from, to, builds, cfg.Server.TempDir, func(b *registry.Build, a registry.Artifact, present bool) {
		what := "copied"
		if present {
			what = "already there"
		}
		fmt.Fprintf(stdout, "build %d %s: %s (sha256 %s)\n", b.ID, a.File, what, a.SHA256)
	})
	fmt.Fprintf(stdout, "%d files copied, %d already there, from the %s to the %s\n", n.Copied, n.Present, from, to)
	return err
}
