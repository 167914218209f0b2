package store

import "context"

// HighestBuildID is the largest build id that names files in the store: a
// witness of ids handed out that Redis cannot lose, which the API gives
// the registry's high-water mark at start (docs/fleet.md, "Ids and tokens
// that never repeat"). It is one Walk: directory entries on disk, a
// listing of the prefix on S3 (1,000 keys a request).
func HighestBuildID(ctx context.Context, a Artifacts) (int64, error) {
	var top int64
	err := a.Walk(ctx, func(f Stored) error {
		top = max(top, f.Build)
		return nil
	})
	return top, err
}
