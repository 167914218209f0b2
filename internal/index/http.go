package index

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/pkgfleet/pkgfleet/internal/pkgmeta"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
)

// Routes registers the index endpoints on mux; wrap adds the API's auth
// when the indexes are not public.
func (x *Index) Routes(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	h := func(pattern string, f func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := f(w, r); err != nil {
				status := http.StatusInternalServerError
				msg := "internal error"
				var he *httpError
				if errors.As(err, &he) {
					status, msg = he.status, he.msg
				} else if errors.Is(err, registry.ErrNotFound) {
					status, msg = http.StatusNotFound, err.Error()
				}
				http.Error(w, msg, status)
			}
		})))
	}
	h("GET /cran/{source}/src/contrib/PACKAGES", x.packages(false))
	h("GET /cran/{source}/src/contrib/PACKAGES.gz", x.packages(true))
	h("GET /cran/{source}/src/contrib/{file}", x.cranFile(false))
	h("GET /cran/{source}/src/contrib/Archive/{pkg}/{file}", x.cranFile(true))
	x.binaryRoutes(h)
	// The simple index of a source; under __linux__/<platform>, the same
	// with the wheels of that platform's own tag (wheelServed).
	for _, root := range []string{"/pypi/{source}/", "/pypi/{source}/__linux__/{platform}/"} {
		h("GET "+root+"simple/", x.simpleRoot)
		h("GET "+root+"simple/{project}/", x.simpleProject)
		h("GET "+root+"simple/{project}", func(w http.ResponseWriter, r *http.Request) error {
			http.Redirect(w, r, r.URL.Path+"/", http.StatusMovedPermanently)
			return nil
		})
		h("GET "+root+"files/{id}/{file}", x.pypiFile)
	}
}

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func notFound(format string, args ...any) error {
	return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}

func (x *Index) source(r *http.Request, typ string) (registry.Source, error) {
	src, err := x.Registry.Source(r.Context(), r.PathValue("source"))
	if err != nil {
		return src, err
	}
	if src.Type != typ {
		return src, notFound("source %q is of type %s, not %s", src.Name, src.Type, typ)
	}
	return src, nil
}

// cranFields are the PACKAGES fields, in CRAN's order.
var cranFields = []string{"Package", "Version", "Depends", "Imports", "LinkingTo", "Suggests", "License", "NeedsCompilation"}

// cranEntry is one package of a PACKAGES file: the build and the
// artifact (source tarball or binary) served for it.
type cranEntry struct {
	b *registry.Build
	a registry.Artifact
}

func (x *Index) packages(gz bool) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		src, err := x.source(r, registry.TypeGit)
		if err != nil {
			return err
		}
		served, err := x.served(r.Context(), src.Name)
		if err != nil {
			return err
		}
		var entries []cranEntry
		for _, builds := range served {
			b := builds[0] // the newest version
			if a, ok := artifactOfKind(b, "source"); ok {
				entries = append(entries, cranEntry{b, a})
			}
		}
		return x.writePACKAGES(w, r, gz, entries)
	}
}

// writePACKAGES writes entries as a PACKAGES file (gzipped when gz), in
// package order; a binary's entry carries R's Built field, which
// install.packages reads to install it as a binary.
func (x *Index) writePACKAGES(w http.ResponseWriter, r *http.Request, gz bool, entries []cranEntry) error {
	sort.Slice(entries, func(i, j int) bool { return foldLess(entries[i].b.Package, entries[j].b.Package) })
	var buf bytes.Buffer
	for _, e := range entries {
		f, err := x.metadata(r.Context(), e.b, e.a)
		if x.missing(e.b, e.a.File, err) {
			continue
		}
		if err != nil {
			return err
		}
		if buf.Len() > 0 {
			buf.WriteByte('\n')
		}
		fields := cranFields
		if e.a.Kind == "binary" {
			fields = append(fields[:len(fields):len(fields)], "Built")
		}
		for _, field := range fields {
			if v := f[field]; v != "" {
				fmt.Fprintf(&buf, "%s: %s\n", field, dcfValue(v))
			}
		}
		fmt.Fprintf(&buf, "MD5sum: %s\n", f["MD5sum"])
	}
	if gz {
		w.Header().Set("Content-Type", "application/x-gzip")
		zw := gzip.NewWriter(w)
		_, _ = zw.Write(buf.Bytes())
		return zw.Close()
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
	return nil
}

func (x *Index) cranFile(archive bool) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		src, err := x.source(r, registry.TypeGit)
		if err != nil {
			return err
		}
		file := r.PathValue("file")
		pkg, version, ok := strings.Cut(strings.TrimSuffix(file, ".tar.gz"), "_")
		if !ok || !strings.HasSuffix(file, ".tar.gz") || (archive && pkg != r.PathValue("pkg")) {
			return notFound("no such file %s", file)
		}
		served, err := x.served(r.Context(), src.Name)
		if err != nil {
			return err
		}
		for i, b := range served[pkg] {
			if b.Version != version || (i == 0) == archive {
				continue // the newest version lives at the top, older ones in Archive/
			}
			return x.serve(w, r, b, file)
		}
		return notFound("no such file %s", file)
	}
}

func (x *Index) serve(w http.ResponseWriter, r *http.Request, b *registry.Build, file string) error {
	ctype := "application/octet-stream"
	if strings.HasSuffix(file, ".tar.gz") {
		ctype = "application/x-gzip"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("X-Pkgfleet-Build", strconv.FormatInt(b.ID, 10))
	err := store.Serve(w, r, x.Store, x.Redirect, b.Source, b.Package, b.ID, b.AttemptToken, file)
	if x.missing(b, file, err) {
		return notFound("%s is missing from the artifact store", file)
	}
	return err
}

func artifactOfKind(b *registry.Build, kind string) (registry.Artifact, bool) {
	for _, a := range b.Artifacts {
		if a.Kind == kind {
			return a, true
		}
	}
	return registry.Artifact{}, false
}

const simpleJSON = "application/vnd.pypi.simple.v1+json"

func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), simpleJSON)
}

func (x *Index) simpleRoot(w http.ResponseWriter, r *http.Request) error {
	src, err := x.source(r, registry.TypeGitPython)
	if err != nil {
		return err
	}
	served, err := x.served(r.Context(), src.Name)
	if err != nil {
		return err
	}
	names := map[string]bool{}
	for pkg := range served {
		names[pkgmeta.NormalizeName(pkg)] = true
	}
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	sortFold(list)
	if wantsJSON(r) {
		projects := make([]map[string]string, len(list))
		for i, n := range list {
			projects[i] = map[string]string{"name": n}
		}
		return writeSimpleJSON(w, map[string]any{"meta": map[string]string{"api-version": "1.0"}, "projects": projects})
	}
	var buf bytes.Buffer
	buf.WriteString("<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>Simple index</title></head><body>\n")
	for _, n := range list {
		fmt.Fprintf(&buf, "<a href=\"%s/\">%s</a><br/>\n", html.EscapeString(n), html.EscapeString(n))
	}
	buf.WriteString("</body></html>\n")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
	return nil
}

func (x *Index) simpleProject(w http.ResponseWriter, r *http.Request) error {
	src, err := x.source(r, registry.TypeGitPython)
	if err != nil {
		return err
	}
	project := r.PathValue("project")
	if norm := pkgmeta.NormalizeName(project); norm != project {
		http.Redirect(w, r, "../"+norm+"/", http.StatusMovedPermanently)
		return nil
	}
	served, err := x.served(r.Context(), src.Name)
	if err != nil {
		return err
	}
	type file struct {
		Filename       string            `json:"filename"`
		URL            string            `json:"url"`
		Hashes         map[string]string `json:"hashes"`
		RequiresPython string            `json:"requires-python,omitempty"`
	}
	var files []file
	for pkg, builds := range served {
		if pkgmeta.NormalizeName(pkg) != project {
			continue
		}
		for _, b := range builds {
			for _, a := range b.Artifacts {
				if a.Kind == "wheel" && !wheelServed(a, r.PathValue("platform")) {
					continue
				}
				f, err := x.metadata(r.Context(), b, a)
				if x.missing(b, a.File, err) {
					continue
				}
				if err != nil {
					return err
				}
				files = append(files, file{
					Filename: a.File, URL: fmt.Sprintf("../../files/%d/%s", b.ID, a.File),
					Hashes: map[string]string{"sha256": a.SHA256}, RequiresPython: f["Requires-Python"],
				})
			}
		}
	}
	if len(files) == 0 {
		return notFound("no project %q in source %q", project, src.Name)
	}
	if wantsJSON(r) {
		return writeSimpleJSON(w, map[string]any{"meta": map[string]string{"api-version": "1.0"}, "name": project, "files": files})
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>Links for %s</title></head><body>\n<h1>Links for %s</h1>\n", html.EscapeString(project), html.EscapeString(project))
	for _, f := range files {
		rp := ""
		if f.RequiresPython != "" {
			rp = fmt.Sprintf(" data-requires-python=\"%s\"", html.EscapeString(f.RequiresPython))
		}
		fmt.Fprintf(&buf, "<a href=\"%s#sha256=%s\"%s>%s</a><br/>\n", html.EscapeString(f.URL), f.Hashes["sha256"], rp, html.EscapeString(f.Filename))
	}
	buf.WriteString("</body></html>\n")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
	return nil
}

// wheelServed says whether the simple index under platform ("" = the
// source's plain index) lists wheel a. pip on any Linux of a wheel's
// architecture takes a linux_<arch> wheel, which may need libraries of
// the distribution it was built on: such a wheel is listed only under the
// platform it was built on, never beside portable (manylinux, any) ones.
func wheelServed(a registry.Artifact, platform string) bool {
	tags := a.Tags
	if len(tags) == 0 { // a record from before tags were recorded
		tags, _ = pkgmeta.WheelTags(a.File)
	}
	if !pkgmeta.LocalLinuxOnly(tags) {
		return true
	}
	return platform != "" && a.Platform == platform
}

func writeSimpleJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", simpleJSON)
	return json.NewEncoder(w).Encode(v)
}

func (x *Index) pypiFile(w http.ResponseWriter, r *http.Request) error {
	src, err := x.source(r, registry.TypeGitPython)
	if err != nil {
		return err
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return notFound("no such build")
	}
	b, err := x.Registry.Build(r.Context(), id)
	if err != nil || b.Source != src.Name || b.Status != registry.StatusSucceeded {
		return notFound("no such build in source %q", src.Name)
	}
	file := r.PathValue("file")
	for _, a := range b.Artifacts {
		if a.File == file {
			return x.serve(w, r, b, file)
		}
	}
	return notFound("build %d has no %s", id, file)
}

// md5File hashes a stored artifact (PACKAGES' MD5sum).
func md5File(r io.Reader) (string, error) {
	h := md5.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sortFold(s []string) { sortStrings(s, foldLess) }

// foldLess orders names as CRAN's PACKAGES does: case folded, then as
// written.
func foldLess(a, b string) bool {
	la, lb := strings.ToLower(a), strings.ToLower(b)
	if la != lb {
		return la < lb
	}
	return a < b
}

// dcfValue writes a value read by read.dcf back as DCF: each further line
// indented, and an empty line (read.dcf's " .") as " .", since a
// whitespace-only line would end the record.
func dcfValue(v string) string {
	lines := strings.Split(v, "\n")
	for i := 1; i < len(lines); i++ {
		if lines[i] == "" {
			lines[i] = "."
		}
		lines[i] = "        " + lines[i]
	}
	return strings.Join(lines, "\n")
}
