package pipeline

import (
	"context"
	"fmt"
	"io"
	"net/url"

	"github.com/pkgfleet/pkgfleet/internal/door"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// doorFor opens the door of one build of bl: to its python_index_url or
// r_repository_url, else to the workers' Git.PythonIndexURL or
// Git.RRepositoryURL. It returns nil (offline, the default) when neither
// is set, when the build has the host network anyway, and for R builds
// that build no vignettes, no binary and run no check (nothing else in
// them fetches anything).
func (p *Pipeline) doorFor(bl *registry.Builder, binary bool, log io.Writer) (*door.Door, error) {
	if p.network {
		return nil, nil
	}
	raw, setting, kind := bl.PythonIndexURL, p.pythonIndexURL, door.Python
	if bl.Language == registry.LangR {
		if !bl.BuildVignettes && !binary && !bl.Check {
			return nil, nil
		}
		raw, setting, kind = bl.RRepositoryURL, p.rRepositoryURL, door.R
	}
	if raw == "" {
		raw = setting
	} else {
		raw = withCredentials(raw, setting)
	}
	if raw == "" {
		return nil, nil
	}
	d, err := door.New(log, door.Index{URL: raw, Kind: kind})
	if err != nil {
		return nil, fmt.Errorf("builder %s: %w", bl.Key(), err)
	}
	d.Net = p.git.Net // one outbound policy for git and the door
	return d, nil
}

// withCredentials gives a builder's index URL the credentials of the
// workers' setting when both name the same scheme and host: builders
// never carry secrets, the workers' settings do.
func withCredentials(override, setting string) string {
	o, err1 := url.Parse(override)
	s, err2 := url.Parse(setting)
	if err1 != nil || err2 != nil || s.User == nil || o.Scheme != s.Scheme || o.Host != s.Host {
		return override
	}
	o.User = s.User
	return o.String()
}

// buildsBinary says whether a build of the R builder bl makes a binary:
// the builder's binary, else its source's default.
func (p *Pipeline) buildsBinary(ctx context.Context, bl *registry.Builder) (bool, error) {
	if bl.Binary != nil {
		return *bl.Binary, nil
	}
	src, err := p.registry.Source(ctx, bl.Source)
	if err != nil {
		return false, fmt.Errorf("builder %s: its source: %w", bl.Key(), err)
	}
	return bl.BuildsBinary(src), nil
}
