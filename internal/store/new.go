package store

import (
	"context"

	"github.com/pkgfleet/pkgfleet/internal/config"
)

// New returns the store the settings choose (Storage.Default): the
// directory FileStorage.Location, or the S3Storage bucket. It does not
// check that the store is writable: Check does.
func New(ctx context.Context, cfg *config.Config) (Artifacts, error) {
	if cfg.Storage.Default == "s3" {
		return NewBucket(ctx, cfg.S3Storage)
	}
	return NewDir(cfg.FileStorage.Location)
}
