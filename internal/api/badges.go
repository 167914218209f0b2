package api

// Badges: /badges/{source}/{builder}.svg, an image of a git-builder's
// newest build (version, status, and the check's verdict when it ran) for
// READMEs. Who may see one is who may see the package indexes: anyone
// when HTTP.PublicIndexes (a source has no visibility of its own; the
// indexes' setting is what makes sources public), else a read token or a
// signed-in browser. A caller without the right gets the same 401 whether
// or not the builder exists, so a private deployment's badges do not tell
// which builders it has.

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/auth"
	"github.com/pkgfleet/pkgfleet/internal/badge"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

func (s *Server) badge(w http.ResponseWriter, r *http.Request) {
	if !s.Config.HTTP.PublicIndexes {
		if sess, _ := s.session(r); sess == nil || sess.Scope < auth.Read {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pkgfleet"`)
			writeError(w, http.StatusUnauthorized, "a read token is required for badges (HTTP.PublicIndexes is false)")
			return
		}
	}
	source := r.PathValue("source")
	name, ok := strings.CutSuffix(r.PathValue("file"), ".svg")
	if !ok {
		writeError(w, http.StatusNotFound, "badges are /badges/SOURCE/BUILDER.svg")
		return
	}
	if _, err := s.Registry.Builder(r.Context(), source, name); err != nil {
		s.fail(w, r, err)
		return
	}
	builds, err := s.Registry.Builds(r.Context(), registry.Filter{Source: source, Builder: name, Limit: 1})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var newest *apiv1.Build
	if len(builds) > 0 {
		newest = builds[0]
	}
	svg := badge.SVG(badgeTitle(name, newest), badgeSegments(name, newest)...)
	sum := sha256.Sum256(svg)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	h := w.Header()
	h.Set("ETag", etag)
	// Revalidated on every view (a README shows the build as it is now),
	// and answered 304 when the build has not changed. A badge behind a
	// token is for that caller only.
	if s.Config.HTTP.PublicIndexes {
		h.Set("Cache-Control", "public, no-cache")
	} else {
		h.Set("Cache-Control", "private, no-cache")
		h.Add("Vary", "Authorization, Cookie")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	// Opened on its own, the SVG is a document: it may run nothing.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "image/svg+xml")
	_, _ = w.Write(svg)
}

// badgeSegments are the badge's texts: the builder, then the newest
// build's version and status, then its check's verdict if one ran.
func badgeSegments(name string, b *apiv1.Build) []badge.Segment {
	segs := []badge.Segment{{Text: name, Color: badge.Label}}
	if b == nil {
		return append(segs, badge.Segment{Text: "no builds", Color: badge.Grey})
	}
	status := b.Status
	if b.Version != "" {
		status = b.Version + " " + status
	}
	segs = append(segs, badge.Segment{Text: status, Color: statusColor(b.Status)})
	if b.Check != nil {
		segs = append(segs, badge.Segment{Text: "check " + b.Check.Verdict, Color: verdictColor(b.Check.Verdict)})
	}
	return segs
}

func badgeTitle(name string, b *apiv1.Build) string {
	var parts []string
	for _, s := range badgeSegments(name, b) {
		parts = append(parts, s.Text)
	}
	return strings.Join(parts, ": ")
}

func statusColor(status string) string {
	switch status {
	case apiv1.StatusSucceeded:
		return badge.Green
	case apiv1.StatusFailed:
		return badge.Red
	case apiv1.StatusCanceled:
		return badge.Grey
	}
	return badge.Blue // queued, waiting, running
}

func verdictColor(verdict string) string {
	switch verdict {
	case "OK":
		return badge.Green
	case "NOTE":
		return badge.Yellow
	case "WARNING":
		return badge.Orange
	}
	return badge.Red // ERROR, failed
}
