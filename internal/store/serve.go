package store

import (
	"net/http"
)

// Serve answers a GET or HEAD, with or without Range, for one file a
// build record names (the caller has set Content-Type and its own
// headers): its bytes through http.ServeContent, or, with redirect and a
// store that presigns, a GET with a redirect to a presigned URL of it (a
// HEAD is answered here: a URL presigned for GET refuses a HEAD). A file
// missing from the store is an error matching fs.ErrNotExist, before
// anything was written.
func Serve(w http.ResponseWriter, r *http.Request, a Artifacts, redirect bool, source, pkg string, buildID, token int64, file string) error {
	if p, ok := a.(Presigner); ok && redirect && r.Method == http.MethodGet {
		u, err := p.PresignGet(r.Context(), source, pkg, buildID, token, file)
		if err != nil {
			return err
		}
		w.Header().Del("Content-Type")
		http.Redirect(w, r, u, http.StatusFound)
		return nil
	}
	f, err := a.Open(r.Context(), source, pkg, buildID, token, file)
	if err != nil {
		return err
	}
	defer f.Close()
	http.ServeContent(w, r, file, f.ModTime(), f)
	return nil
}
