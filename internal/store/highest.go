package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// HighestBuildID is the largest build id that names files in the store
// (attemptPrefix, or a directory of the layout before one directory per
// package): a witness of ids handed out that Redis cannot lose, which the
// API gives the registry's high-water mark at start (docs/fleet.md, "Ids
// and tokens that never repeat"). It reads directory entries only.
func (s *Store) HighestBuildID() (int64, error) {
	var top int64
	sources, err := os.ReadDir(s.Root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("artifact store: %w", err)
	}
	for _, src := range sources {
		if !src.IsDir() {
			continue
		}
		pkgs, err := os.ReadDir(filepath.Join(s.Root, src.Name()))
		if err != nil {
			return 0, fmt.Errorf("artifact store: %w", err)
		}
		for _, pkg := range pkgs {
			if !pkg.IsDir() {
				continue
			}
			ents, err := os.ReadDir(filepath.Join(s.Root, src.Name(), pkg.Name()))
			if err != nil {
				return 0, fmt.Errorf("artifact store: %w", err)
			}
			for _, e := range ents {
				id, _, _ := strings.Cut(e.Name(), "-")
				if n, err := strconv.ParseInt(id, 10, 64); err == nil && n > top {
					top = n
				}
			}
		}
	}
	return top, nil
}
