package api

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/roster"
	"github.com/pkgfleet/pkgfleet/internal/version"
)

// buildsPerBuilder is how many of a builder's newest builds the page lists.
const buildsPerBuilder = 10

// pageBuilders is how many git-builders the builds page shows at once.
const pageBuilders = 50

var pageFuncs = template.FuncMap{
	"short": func(sha string) string {
		if len(sha) > 12 {
			return sha[:12]
		}
		return sha
	},
	"bytes": func(n int64) string {
		switch {
		case n >= 1<<20:
			return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
		case n >= 1<<10:
			return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
		}
		return fmt.Sprintf("%d B", n)
	},
	"terminal": registry.Terminal,
	"join":     strings.Join,
}

// humanDuration writes d as a person reads it: 340ms, 4.2s, 3m12s, 1h02m.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// ago writes how long before now t was, coarsely.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 5*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

type buildView struct {
	*registry.Build
	When    string // relative
	At      string // absolute, UTC
	Took    string // run time so far or in all; "" before it started
	Reason  string // the first line of the detail
	Phases  []phaseView
	Running bool
	// VersionWarning says that pip will not pick this build: a
	// development version below a release its source already holds.
	VersionWarning string
}

type phaseView struct {
	Name    string
	Took    string
	Percent float64 // of all phases, for the bar
}

func newBuildView(b *registry.Build, now time.Time) buildView {
	v := buildView{Build: b, When: ago(now, b.CreatedAt), At: b.CreatedAt.UTC().Format("2006-01-02 15:04:05 UTC"),
		Running: !registry.Terminal(b.Status)}
	if b.StartedAt != nil {
		end := now
		if b.FinishedAt != nil {
			end = *b.FinishedAt
		}
		v.Took = humanDuration(end.Sub(*b.StartedAt))
	}
	v.Reason, _, _ = strings.Cut(strings.TrimSpace(b.Detail), "\n")
	var total float64
	for _, p := range b.Phases {
		total += p.MS
	}
	for _, p := range b.Phases {
		pv := phaseView{Name: strings.ReplaceAll(p.Phase, "_", " "), Took: humanDuration(time.Duration(p.MS * float64(time.Millisecond)))}
		if total > 0 {
			pv.Percent = 100 * p.MS / total
		}
		v.Phases = append(v.Phases, pv)
	}
	return v
}

type builderView struct {
	*registry.Builder
	URL      string // as a person reads it (git.DisplayURL)
	Schedule string
	Builds   []buildView
}

type sourceView struct {
	registry.Source
	Install string // the line that installs from this source
	// BinaryInstalls are the lines that install its binaries (R) or
	// platform wheels (Python), one per platform its builds made them for.
	BinaryInstalls []binaryInstall
	Builders       []builderView
	Hooks          []hookView // its outbound webhooks, its builders' too
	NeedsToken     bool       // the indexes need a read token
	PackageHint    string
}

type workerView struct {
	roster.Worker
	Languages string
	Limit     string // max_user_namespaces, or "unknown"
	Short     bool   // its own slots need more namespaces than its host allows
	BelowPPM  bool   // its host allows fewer than PPM's formula asks for the builders
}

type indexView struct {
	Session    *session
	Sources    []sourceView
	Workers    []workerView
	Budget     roster.Budget
	BudgetMath string
	Active     bool // a build is still going: the page refreshes itself
	Now        string
	Next       string // the next page's cursor, "" on the last
	Later      bool   // not the first page
	Retention  string // the retention policy, in words
}

// baseURL is how the visitor reached the API, for the install lines.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Server) indexPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	ctx := r.Context()
	now := time.Now()
	view := indexView{Session: sess, Now: now.UTC().Format("15:04:05 UTC")}
	sources, err := s.Registry.Sources(ctx)
	if err != nil {
		return err
	}
	// One page of builders (pageBuilders, in source/name order), each
	// with its last builds: the page's size does not grow with the fleet.
	after, err := decodeCursor(r.URL.Query().Get("after"))
	if err != nil {
		return err
	}
	page, next, err := s.Registry.BuildersPage(ctx, "", after, pageBuilders)
	if err != nil {
		return err
	}
	view.Next, view.Later = encodeCursor(next), after != ""
	if err := s.withPollStatus(ctx, page...); err != nil {
		return err
	}
	for _, src := range sources {
		sv := sourceView{Source: src, NeedsToken: !s.Config.HTTP.PublicIndexes}
		var platforms []string // those its builds made binaries for
		if !slices.ContainsFunc(page, func(b *registry.Builder) bool { return b.Source == src.Name }) {
			// Shown without builders on the first page only if it has none.
			if n, err := s.Registry.CountBuilders(ctx, src.Name); err != nil || n > 0 || after != "" {
				if err != nil {
					return err
				}
				continue
			}
		}
		// The newest releases of the source, read once for all its
		// builders on the page (a branch build below one is warned of).
		var releases map[string]string
		for _, b := range page {
			if b.Source != src.Name {
				continue
			}
			if releases == nil {
				if releases, err = s.newestReleases(ctx, src.Name); err != nil {
					return err
				}
			}
			bv, err := s.builderView(ctx, b, releases, now)
			if err != nil {
				return err
			}
			for _, x := range bv.Builds {
				view.Active = view.Active || x.Running
				if sv.PackageHint == "" && x.Package != "" {
					sv.PackageHint = x.Package
				}
				for _, a := range x.Artifacts {
					if a.Platform != "" && !slices.Contains(platforms, a.Platform) {
						platforms = append(platforms, a.Platform)
					}
				}
			}
			if sv.PackageHint == "" {
				sv.PackageHint = b.Name
			}
			sv.Builders = append(sv.Builders, bv)
		}
		if sv.Hooks, err = s.hookViews(ctx, src.Name); err != nil {
			return err
		}
		sv.Install = installLine(baseURL(r), src, sv.PackageHint)
		slices.Sort(platforms)
		for _, p := range platforms {
			sv.BinaryInstalls = append(sv.BinaryInstalls, binaryInstall{p, binaryInstallLine(baseURL(r), src, p, sv.PackageHint)})
		}
		view.Sources = append(view.Sources, sv)
	}
	if err := s.fleetView(ctx, &view); err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "index", view)
	return nil
}

type binaryInstall struct{ Platform, Line string }

// binaryInstallLine is how a person on platform installs a package's
// binary from src (internal/index serves them). R sends the User-Agent
// that names its version only when the option is set in the session, as
// PPM's documentation also says for Linux.
func binaryInstallLine(base string, src registry.Source, platform, pkg string) string {
	if pkg == "" {
		pkg = "PACKAGE"
	}
	if src.Language() == registry.LangPython {
		return fmt.Sprintf("pip install --index-url %s/pypi/%s/__linux__/%s/simple/ %s", base, src.Name, platform, pkg)
	}
	return fmt.Sprintf(`options(HTTPUserAgent = sprintf("R/%%s R (%%s)", getRversion(), paste(getRversion(), R.version["platform"], R.version["arch"], R.version["os"]))); `+
		`install.packages("%s", repos = "%s/cran/%s/__linux__/%s/latest")`, pkg, base, src.Name, platform)
}

// hookView is an outbound webhook with its last delivery attempts.
type hookView struct {
	apiv1.Hook
	Deliveries []apiv1.HookDelivery
}

// hookDeliveriesShown is how many of a hook's last attempts the page shows.
const hookDeliveriesShown = 5

func (s *Server) hookViews(ctx context.Context, source string) ([]hookView, error) {
	hooks, err := s.Hooks.ListAll(ctx, source)
	if err != nil {
		return nil, err
	}
	var out []hookView
	for _, h := range hooks {
		ds, err := s.Hooks.Deliveries(ctx, source, h.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, hookView{Hook: h, Deliveries: ds[:min(len(ds), hookDeliveriesShown)]})
	}
	return out, nil
}

// installLine is how a person installs a package from src.
func installLine(base string, src registry.Source, pkg string) string {
	if pkg == "" {
		pkg = "PACKAGE"
	}
	if src.Language() == registry.LangPython {
		return fmt.Sprintf("pip install --index-url %s/pypi/%s/simple/ %s", base, src.Name, pkg)
	}
	return fmt.Sprintf(`install.packages("%s", repos = "%s/cran/%s")`, pkg, base, src.Name)
}

func (s *Server) builderView(ctx context.Context, b *registry.Builder, releases map[string]string, now time.Time) (builderView, error) {
	every := time.Duration(b.PollInterval)
	if every == 0 {
		every = s.Config.Git.PollInterval
	}
	sched := "polls every " + every.String()
	if b.LastPollAt != nil {
		sched += ", last " + ago(now, *b.LastPollAt)
	}
	if b.NextPollAt != nil && b.NextPollAt.After(now) {
		sched += ", next in " + humanDuration(b.NextPollAt.Sub(now).Round(time.Second))
	}
	if b.WebhookSecretSet {
		sched += "; webhooks on"
	}
	builds, err := s.Registry.Builds(ctx, registry.Filter{Source: b.Source, Builder: b.Name, Limit: buildsPerBuilder})
	if err != nil {
		return builderView{}, err
	}
	if err := s.noWorkerDetail(ctx, builds...); err != nil {
		return builderView{}, err
	}
	bv := builderView{Builder: b, URL: apiv1.DisplayURL(b.URL), Schedule: sched}
	for _, x := range builds {
		v := newBuildView(x, now)
		v.VersionWarning = versionWarning(x, releases)
		bv.Builds = append(bv.Builds, v)
	}
	return bv, nil
}

// newestReleases is the newest release (no dev, pre-release or local
// part) of each package that source's newest 1000 successful builds made.
// It reads the builds the source's index can serve (one per version at
// least), not every build in Redis.
func (s *Server) newestReleases(ctx context.Context, source string) (map[string]string, error) {
	builds, err := s.Registry.Servable(ctx, source, 1000)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, b := range builds {
		if b.Package != "" && releaseVersion.MatchString(b.Version) && version.Compare(b.Version, out[b.Package]) > 0 {
			out[b.Package] = b.Version
		}
	}
	return out, nil
}

// releaseVersion is a PEP 440 final release (or post-release), which pip
// picks over any development or pre-release version.
var releaseVersion = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+)*([.-]?post[0-9]*)?$`)

// versionWarning warns of a succeeded build that pip will not pick: not a
// release, and below the newest release of its package in its source.
func versionWarning(b *registry.Build, releases map[string]string) string {
	newest := releases[b.Package]
	if b.Status != registry.StatusSucceeded || newest == "" || releaseVersion.MatchString(b.Version) || version.Compare(b.Version, newest) >= 0 {
		return ""
	}
	return fmt.Sprintf("%s is below %s, the newest release of %s in this source: pip will not pick it", b.Version, newest, b.Package)
}

// fleetView fills in the workers and PPM's user-namespace budget.
func (s *Server) fleetView(ctx context.Context, view *indexView) error {
	if s.Enqueuer.Redis == nil {
		return nil
	}
	// The user-namespace budget counts every builder, from the counts
	// kept as builders change (never a walk of the fleet per view).
	builders, err := s.Registry.CountBuildersByKind(ctx)
	if err != nil {
		return err
	}
	workers, err := roster.List(ctx, s.Enqueuer.Redis)
	if err != nil {
		return err
	}
	view.Budget = roster.NewBudget(builders, s.Config.Git.BuildConcurrency, workers)
	view.Retention = s.RetentionPolicy().String()
	b := view.Budget
	view.BudgetMath = fmt.Sprintf("((%d × %d) + %d) × %d = %d", b.TagBuilders, b.BuildConcurrency, b.CommitBuilders, roster.NamespacesPerBuild, b.Required)
	for _, wk := range workers {
		v := workerView{Worker: wk, Limit: strconv.Itoa(wk.MaxUserNamespaces)}
		var langs []string
		for _, name := range []string{registry.LangR, registry.LangPython} {
			if l, ok := wk.Languages[name]; ok {
				label := map[string]string{registry.LangR: "R", registry.LangPython: "Python"}[name]
				langs = append(langs, strings.TrimSpace(label+" "+l.Version))
			}
		}
		v.Languages = strings.Join(langs, ", ")
		if v.Languages == "" {
			v.Languages = "none"
		}
		if wk.MaxUserNamespaces < 0 {
			v.Limit = "unknown"
		} else {
			v.Short = wk.NamespacesNeeded > wk.MaxUserNamespaces
			v.BelowPPM = b.Required > wk.MaxUserNamespaces
		}
		view.Workers = append(view.Workers, v)
	}
	return nil
}

type artifactView struct {
	registry.Artifact
	URL string
}

type buildPageView struct {
	Session   *session
	Build     buildView
	Log       string
	Offset    int
	Artifacts []artifactView
}

func (s *Server) buildPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	b, err := s.build(r)
	if err != nil {
		return err
	}
	if err := s.noWorkerDetail(r.Context(), b); err != nil {
		return err
	}
	log, err := s.logs().Read(r.Context(), b, 0)
	if err != nil {
		return err
	}
	view := buildPageView{Session: sess, Build: newBuildView(b, time.Now()), Log: string(log), Offset: len(log)}
	releases, err := s.newestReleases(r.Context(), b.Source)
	if err != nil {
		return err
	}
	view.Build.VersionWarning = versionWarning(b, releases)
	for _, a := range b.Artifacts {
		view.Artifacts = append(view.Artifacts, artifactView{Artifact: a,
			URL: fmt.Sprintf("/builds/%d/artifacts/%s", b.ID, a.File)})
	}
	s.render(w, r, http.StatusOK, "build", view)
	return nil
}

func (s *Server) runFromPage(w http.ResponseWriter, r *http.Request, _ *session) error {
	req, err := s.manualRun(r)
	if err != nil {
		return err
	}
	out, _, err := s.startBuild(r.Context(), req)
	if err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/builds/%d", out.ID), http.StatusSeeOther)
	return nil
}

func (s *Server) rerunFromPage(w http.ResponseWriter, r *http.Request, _ *session) error {
	prev, err := s.build(r)
	if err != nil {
		return err
	}
	b, err := s.Registry.Builder(r.Context(), prev.Source, prev.Builder)
	if err != nil {
		return err
	}
	out, _, err := s.startBuild(r.Context(), queue.Request{Builder: b, Ref: prev.Ref, SHA: prev.SHA, Trigger: "rerun", Mode: registry.ReuseActive})
	if err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/builds/%d", out.ID), http.StatusSeeOther)
	return nil
}

func (s *Server) cancelFromPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	b, err := s.build(r)
	if err != nil {
		return err
	}
	who := "a builds-page user"
	if sess.Who != "" {
		who = "token " + sess.Who
	}
	if _, err := s.cancel(r.Context(), b, who); err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/builds/%d", b.ID), http.StatusSeeOther)
	return nil
}
