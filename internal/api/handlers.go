package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/credential"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/pkgmeta"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
)

func (s *Server) createSource(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name   string `json:"name"`
		Type   string `json:"type"`
		Binary bool   `json:"binary"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	src, err := s.Registry.CreateSource(r.Context(), registry.Source{Name: req.Name, Type: req.Type, Binary: req.Binary})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, src)
	return nil
}

func (s *Server) listSources(w http.ResponseWriter, r *http.Request) error {
	list, err := s.Registry.Sources(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Sources{Sources: list})
	return nil
}

func (s *Server) getSource(w http.ResponseWriter, r *http.Request) error {
	src, err := s.Registry.Source(r.Context(), r.PathValue("source"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, src)
	return nil
}

func (s *Server) deleteSource(w http.ResponseWriter, r *http.Request) error {
	if err := s.Registry.DeleteSource(r.Context(), r.PathValue("source")); err != nil {
		return err
	}
	if err := s.Hooks.DeleteOf(r.Context(), r.PathValue("source"), ""); err != nil {
		return fmt.Errorf("delete the hooks of the deleted source: %w", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// builderFields are the editable fields of a git-builder; nil = unchanged
// (PATCH) or default (POST).
type builderFields struct {
	URL               *string            `json:"url"`
	Branch            *string            `json:"branch"`
	BuildTrigger      *string            `json:"build_trigger"`
	SubDir            *string            `json:"sub_dir"`
	CloneDepth        *int               `json:"clone_depth"`
	RecurseSubmodules *int               `json:"recurse_submodules"`
	TagPattern        *string            `json:"tag_pattern"`
	PollInterval      *registry.Duration `json:"poll_interval"`
	InitialTags       *int               `json:"initial_tags"`
	Credential        *string            `json:"credential"`
	PythonIndexURL    *string            `json:"python_index_url"`
	RRepositoryURL    *string            `json:"r_repository_url"`
	BuildVignettes    *bool              `json:"build_vignettes"`
	Check             *bool              `json:"check"`
	CheckGates        *bool              `json:"check_gates"`
	CheckCommand      *string            `json:"check_command"`
	// Binary: true or false sets it; null (JSON) puts it back to the
	// source's default, as does absent on create.
	Binary optionalBool `json:"binary"`
	// WebhookSecret is write-only: stored apart, never returned.
	WebhookSecret *string `json:"webhook_secret"`
}

func (f *builderFields) apply(b *registry.Builder) {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&b.URL, f.URL)
	set(&b.Branch, f.Branch)
	set(&b.BuildTrigger, f.BuildTrigger)
	set(&b.SubDir, f.SubDir)
	set(&b.TagPattern, f.TagPattern)
	set(&b.Credential, f.Credential)
	set(&b.PythonIndexURL, f.PythonIndexURL)
	set(&b.RRepositoryURL, f.RRepositoryURL)
	set(&b.CheckCommand, f.CheckCommand)
	for _, o := range []struct {
		dst *bool
		src *bool
	}{{&b.BuildVignettes, f.BuildVignettes}, {&b.Check, f.Check}, {&b.CheckGates, f.CheckGates}} {
		if o.src != nil {
			*o.dst = *o.src
		}
	}
	if f.Binary.Set {
		b.Binary = f.Binary.Value
	}
	if f.CloneDepth != nil {
		b.CloneDepth = *f.CloneDepth
	}
	if f.RecurseSubmodules != nil {
		b.RecurseSubmodules = *f.RecurseSubmodules
	}
	if f.PollInterval != nil {
		b.PollInterval = *f.PollInterval
	}
	if f.InitialTags != nil {
		n := *f.InitialTags
		b.InitialTags = &n
	}
	if f.WebhookSecret != nil {
		b.WebhookSecretSet = *f.WebhookSecret != ""
	}
}

// optionalBool tells a field given as null (reset to the default) from
// one not given at all.
type optionalBool struct {
	Set   bool
	Value *bool
}

func (o *optionalBool) UnmarshalJSON(b []byte) error {
	o.Set = true
	return json.Unmarshal(b, &o.Value)
}

// storeWebhookSecret saves a secret given in a request, after the builder
// itself was stored.
func (s *Server) storeWebhookSecret(r *http.Request, b *registry.Builder, f *builderFields) error {
	if f.WebhookSecret == nil {
		return nil
	}
	// Sealed with the credential key when there is one, like credentials.
	sealed, err := s.Creds.Seal("webhook-secret\x00"+b.Key(), *f.WebhookSecret)
	if err != nil {
		return err
	}
	return s.Registry.SetWebhookSecret(r.Context(), b.Source, b.Name, sealed)
}

func (s *Server) policy() registry.Policy {
	return registry.Policy{URLs: s.Git.Policy, Net: s.Git.Net}
}

func (s *Server) createBuilder(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name string `json:"name"`
		builderFields
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	src, err := s.Registry.Source(ctx, r.PathValue("source"))
	if err != nil {
		return err
	}
	// Each builder is polled on its own; the cap bounds what one source
	// asks of the poller. Two creates at once may pass it by one.
	if most := s.Config.Git.MaxBuildersPerSource; most > 0 {
		n, err := s.Registry.CountBuilders(ctx, src.Name)
		if err != nil {
			return err
		}
		if n >= most {
			return errorf(http.StatusConflict, "source %q has %d git-builders, the most Git.MaxBuildersPerSource allows", src.Name, n)
		}
	}
	if req.WebhookSecret != nil {
		if err := validSecret("webhook_secret", *req.WebhookSecret); err != nil {
			return err
		}
	}
	b := &registry.Builder{Source: src.Name, Name: req.Name, Language: src.Language(), CloneDepth: 1}
	req.apply(b)
	if req.Name == "" {
		if src.Language() != registry.LangR {
			return errorf(http.StatusBadRequest, "name is required for Python git-builders")
		}
		// R builders take the package's name, as PPM does: validate
		// everything else first, so no git call sees a bad URL.
		b.Name = "placeholder"
		if err := s.validateBuilder(ctx, b); err != nil {
			return err
		}
		name, err := s.packageName(ctx, b)
		var he *httpError
		if errors.As(err, &he) {
			return err // the remote did not answer (502)
		} else if err != nil {
			return errorf(http.StatusBadRequest, "no name given and the package name could not be read from DESCRIPTION: %v", err)
		}
		b.Name = name
	}
	if err := s.validateBuilder(ctx, b); err != nil {
		return err
	}
	if err := s.Registry.CreateBuilder(ctx, b); err != nil {
		return err
	}
	if err := s.storeWebhookSecret(r, b, &req.builderFields); err != nil {
		return err
	}
	s.Log.Info("git-builder created", "source", b.Source, "name", b.Name, "trigger", b.BuildTrigger)
	writeJSON(w, http.StatusCreated, b)
	return nil
}

// validateBuilder checks the builder and that its credential exists and
// may be sent to its URL's scheme, host and port.
func (s *Server) validateBuilder(ctx context.Context, b *registry.Builder) error {
	if err := s.policy().ValidateBuilder(b); err != nil {
		return err
	}
	if b.Credential == "" {
		return nil
	}
	info, err := s.Creds.Info(ctx, b.Credential)
	if err != nil {
		return err
	}
	return credential.CheckURL(info, b.URL)
}

// gitFor returns the git client for a builder's remote, with its
// credential, and the cleanup to run when done.
func (s *Server) gitFor(ctx context.Context, b *registry.Builder) (*git.Client, func(), error) {
	return s.Creds.GitClient(ctx, s.Git, b.Credential, b.URL, s.Config.Server.TempDir)
}

// packageName reads DESCRIPTION's Package from the builder's branch head.
// A remote that does not answer is a 502, as for a run; what the remote
// holds (no such branch, no DESCRIPTION) is the caller's to judge.
func (s *Server) packageName(ctx context.Context, b *registry.Builder) (string, error) {
	var name string
	var read error // what the remote holds, not whether it answered
	err := s.remote(ctx, b, "no name given, and the package name could not be read", func(ctx context.Context, gc *git.Client) error {
		refs, err := gc.LsRemote(ctx, b.URL)
		if err != nil {
			return err
		}
		_, sha, err := refs.Branch(b.Branch)
		if err != nil {
			read = err
			return nil
		}
		dir, err := os.MkdirTemp(s.Config.Server.TempDir, "pkgfleet-name-")
		if err != nil {
			read = err
			return nil
		}
		defer os.RemoveAll(dir)
		if _, err := gc.Clone(ctx, dir, git.CloneOptions{URL: b.URL, SHA: sha, Depth: 1, FilesOnly: true}); err != nil {
			return err
		}
		name, read = pkgmeta.PackageName(filepath.Join(dir, filepath.FromSlash(b.SubDir)))
		return nil
	})
	if err != nil {
		return "", err
	}
	if read != nil {
		return "", read
	}
	if err := registry.ValidateName("name", name); err != nil {
		return "", err
	}
	return name, nil
}

// A list of git-builders is answered a page at a time (?limit=, default
// builderPage, at most maxBuilderPage), each page naming the cursor of the
// next (?cursor=): a source of 10,000 builders is not one answer.
const (
	builderPage    = 100
	maxBuilderPage = 1000
)

// remote runs f, a query of b's remote that an API request waits for,
// within Git.RemoteTimeout and with at most Git.RemoteConcurrency at once,
// so that silent remotes cannot hold requests and git processes without
// bound. Its failure is a 502 (504 on the time-out) with git.Explain's
// message after what: git's own text, which would make the API a port
// scanner and banner reader, goes to the server log only.
func (s *Server) remote(ctx context.Context, b *registry.Builder, what string, f func(context.Context, *git.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.Config.Git.RemoteTimeout)
	defer cancel()
	if s.remotes != nil {
		select {
		case s.remotes <- struct{}{}:
			defer func() { <-s.remotes }()
		case <-ctx.Done():
			return errorf(http.StatusServiceUnavailable, "%s: too many git remote queries in flight (Git.RemoteConcurrency); try again later", what)
		}
	}
	gc, done, err := s.gitFor(ctx, b)
	if err != nil {
		return err
	}
	defer done()
	if err := f(ctx, gc); err != nil {
		s.Log.Warn("git remote query failed", "source", b.Source, "builder", b.Name, "error", err)
		code := http.StatusBadGateway
		if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		return errorf(code, "%s: %s", what, git.Explain(err))
	}
	return nil
}

func (s *Server) listBuilders(w http.ResponseWriter, r *http.Request) error {
	source := r.PathValue("source")
	if _, err := s.Registry.Source(r.Context(), source); err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"), builderPage, maxBuilderPage)
	if err != nil {
		return err
	}
	after, err := decodeCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	list, next, err := s.Registry.BuildersPage(r.Context(), source, after, limit)
	if err != nil {
		return err
	}
	if list == nil {
		list = []*registry.Builder{}
	}
	if err := s.withPollStatus(r.Context(), list...); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Builders{Builders: list, NextCursor: encodeCursor(next)})
	return nil
}

// pageLimit reads a page size: def when v is "", else 1 to most.
func pageLimit(v string, def, most int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, errorf(http.StatusBadRequest, "limit must be a number from 1 to %d", most)
	}
	return n, nil
}

// A cursor is the key of the last builder of a page, opaque to clients
// so that its form can change.
func encodeCursor(key string) string {
	if key == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(key))
}

func decodeCursor(c string) (string, error) {
	key, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(key) > 512 {
		return "", errorf(http.StatusBadRequest, "cursor is not one this API gave")
	}
	return string(key), nil
}

func (s *Server) getBuilder(w http.ResponseWriter, r *http.Request) error {
	b, err := s.Registry.Builder(r.Context(), r.PathValue("source"), r.PathValue("name"))
	if err != nil {
		return err
	}
	if err := s.withPollStatus(r.Context(), b); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) editBuilder(w http.ResponseWriter, r *http.Request) error {
	var req builderFields
	if err := decode(r, &req); err != nil {
		return err
	}
	b, err := s.Registry.UpdateBuilder(r.Context(), r.PathValue("source"), r.PathValue("name"), func(b *registry.Builder) error {
		req.apply(b)
		if b.BuildTrigger == registry.TriggerCommits && req.BuildTrigger != nil && req.TagPattern == nil {
			b.TagPattern = "" // switching to commits drops the tag filter
		}
		if req.WebhookSecret != nil {
			if err := validSecret("webhook_secret", *req.WebhookSecret); err != nil {
				return err
			}
		}
		return s.validateBuilder(r.Context(), b)
	})
	if err != nil {
		return err
	}
	if err := s.storeWebhookSecret(r, b, &req); err != nil {
		return err
	}
	if err := s.withPollStatus(r.Context(), b); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) deleteBuilder(w http.ResponseWriter, r *http.Request) error {
	if err := s.Registry.DeleteBuilder(r.Context(), r.PathValue("source"), r.PathValue("name")); err != nil {
		return err
	}
	if err := s.Hooks.DeleteOf(r.Context(), r.PathValue("source"), r.PathValue("name")); err != nil {
		return fmt.Errorf("delete the hooks of the deleted git-builder: %w", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// runBuilder builds the branch head, or the newest matching tag.
func (s *Server) runBuilder(w http.ResponseWriter, r *http.Request) error {
	req, err := s.manualRun(r)
	if err != nil {
		return err
	}
	return s.enqueue(w, r, req)
}

// manualRun is the request to build the head of the builder named in r's
// path (API and builds page alike): its remote is asked for its refs now.
func (s *Server) manualRun(r *http.Request) (queue.Request, error) {
	ctx := r.Context()
	b, err := s.Registry.Builder(ctx, r.PathValue("source"), r.PathValue("name"))
	if err != nil {
		return queue.Request{}, err
	}
	refs, err := s.lsRemote(ctx, b)
	if err != nil {
		return queue.Request{}, err
	}
	return queue.Request{Builder: b, Refs: refs, Trigger: "manual", Mode: registry.ReuseUnlessFailed}, nil
}

// rerunBuilder builds a given tag or commit again.
func (s *Server) rerunBuilder(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Tag       string `json:"tag"`
		CommitSHA string `json:"commit_sha"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	if (req.Tag == "") == (req.CommitSHA == "") {
		return errorf(http.StatusBadRequest, `give exactly one of "tag" or "commit_sha"`)
	}
	if req.CommitSHA != "" {
		if err := git.ValidateSHA(req.CommitSHA); err != nil {
			return errorf(http.StatusBadRequest, "commit_sha %v", err)
		}
	} else if err := git.ValidateRef(req.Tag); err != nil {
		return errorf(http.StatusBadRequest, "tag %v", err)
	}
	ctx := r.Context()
	b, err := s.Registry.Builder(ctx, r.PathValue("source"), r.PathValue("name"))
	if err != nil {
		return err
	}
	if req.CommitSHA != "" {
		return s.enqueue(w, r, queue.Request{Builder: b, Ref: req.CommitSHA, SHA: req.CommitSHA, Trigger: "rerun", Mode: registry.ReuseActive})
	}
	refs, err := s.lsRemote(ctx, b)
	if err != nil {
		return err
	}
	sha, ok := refs.Tags[req.Tag]
	if !ok {
		return errorf(http.StatusNotFound, "tag %q not found on the remote", req.Tag)
	}
	return s.enqueue(w, r, queue.Request{Builder: b, Ref: req.Tag, SHA: sha, Trigger: "rerun", Mode: registry.ReuseActive})
}

func (s *Server) lsRemote(ctx context.Context, b *registry.Builder) (*git.Refs, error) {
	var refs *git.Refs
	err := s.remote(ctx, b, "ls-remote", func(ctx context.Context, gc *git.Client) error {
		var err error
		refs, err = gc.LsRemote(ctx, b.URL)
		return err
	})
	return refs, err
}

func (s *Server) enqueue(w http.ResponseWriter, r *http.Request, req queue.Request) error {
	out, created, err := s.startBuild(r.Context(), req)
	if err != nil {
		return err
	}
	resp := apiv1.Run{Builds: []*registry.Build{out}}
	if created {
		resp.New = 1
	}
	writeJSON(w, http.StatusAccepted, resp)
	return nil
}

// startBuild queues req through the one enqueue entry point; a builder
// with nothing to build is the client's problem (422).
func (s *Server) startBuild(ctx context.Context, req queue.Request) (*registry.Build, bool, error) {
	out, created, err := s.Enqueuer.Enqueue(ctx, s.Log, req)
	if errors.Is(err, queue.ErrNoRef) {
		return nil, false, errorf(http.StatusUnprocessableEntity, "%v", err)
	}
	return out, created, err
}

func (s *Server) listBuilds(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := registry.Filter{Source: q.Get("source"), Builder: q.Get("builder"), Status: q.Get("status")}
	switch f.Status {
	case "", registry.StatusQueued, registry.StatusWaiting, registry.StatusRunning,
		registry.StatusSucceeded, registry.StatusFailed, registry.StatusCanceled:
	default:
		return errorf(http.StatusBadRequest, "status %q is not one of queued, waiting, running, succeeded, failed, canceled", f.Status)
	}
	if v := q.Get("limit"); v != "" {
		n, err := pageLimit(v, 0, 1000)
		if err != nil {
			return err
		}
		f.Limit = n
	}
	list, err := s.Registry.Builds(r.Context(), f)
	if err != nil {
		return err
	}
	if list == nil {
		list = []*registry.Build{}
	}
	if err := s.noWorkerDetail(r.Context(), list...); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Builds{Builds: list})
	return nil
}

func (s *Server) build(r *http.Request) (*registry.Build, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return nil, errorf(http.StatusBadRequest, "build id must be a positive number")
	}
	return s.Registry.Build(r.Context(), id)
}

func (s *Server) getBuild(w http.ResponseWriter, r *http.Request) error {
	b, err := s.build(r)
	if err != nil {
		return err
	}
	if err := s.noWorkerDetail(r.Context(), b); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

// buildLog returns the log from ?offset= on, Redis's live tail or the
// stored log of a finished build alike; X-Build-Status and X-Log-Offset
// let a client follow it.
func (s *Server) buildLog(w http.ResponseWriter, r *http.Request) error {
	b, err := s.build(r)
	if err != nil {
		return err
	}
	var offset int64
	if v := r.URL.Query().Get("offset"); v != "" {
		if offset, err = strconv.ParseInt(v, 10, 64); err != nil || offset < 0 {
			return errorf(http.StatusBadRequest, "offset must be a non-negative number")
		}
	}
	data, err := s.logs().Read(r.Context(), b, offset)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Build-Status", b.Status)
	w.Header().Set("X-Log-Offset", strconv.FormatInt(offset+int64(len(data)), 10))
	_, _ = w.Write(data)
	return nil
}

func (s *Server) artifact(w http.ResponseWriter, r *http.Request) error {
	b, err := s.build(r)
	if err != nil {
		return err
	}
	name := r.PathValue("file")
	for _, a := range b.Artifacts {
		if a.File != name {
			continue
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
		w.Header().Set("X-Checksum-Sha256", a.SHA256)
		err := store.Serve(w, r, s.Store, s.Config.Storage.S3Redirect, b.Source, b.Package, b.ID, b.AttemptToken, name)
		if errors.Is(err, fs.ErrNotExist) {
			s.Log.Error("an artifact a build record names is missing from the store", "build", b.ID, "file", name, "store", s.Store.String(), "error", err)
			return errorf(http.StatusNotFound, "artifact %s of build %d is missing from the artifact store", name, b.ID)
		}
		if err != nil {
			return fmt.Errorf("artifact %s of build %d: %w", name, b.ID, err)
		}
		return nil
	}
	return errorf(http.StatusNotFound, "build %d has no artifact %q", b.ID, name)
}
