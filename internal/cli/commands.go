package cli

import (
	"cmp"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/spf13/cobra"
)

func (app *App) createSource() *cobra.Command {
	var name, typ string
	var binary bool
	cmd := &cobra.Command{
		Use:   "source",
		Short: "Create a source (--type git for R, git-python for Python)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var src apiv1.Source
			if err := app.client.do(cmd.Context(), "POST", "/api/v1/sources", map[string]any{"name": name, "type": typ, "binary": binary}, &src); err != nil {
				return err
			}
			app.print(src, func(w io.Writer) { fmt.Fprintf(w, "Source %s (%s) created.\n", src.Name, src.Type) })
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "source name")
	cmd.Flags().StringVar(&typ, "type", "git", "git (R packages) or git-python (Python packages)")
	cmd.Flags().BoolVar(&binary, "binary", false, "R: its builders build binary packages for the workers' platforms by default")
	requireFlags(cmd, "name")
	return cmd
}

func (app *App) deleteSource() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use: "source", Short: "Delete a source that has no git-builders", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := app.client.do(cmd.Context(), "DELETE", "/api/v1/sources/"+url.PathEscape(name), nil, nil); err != nil {
				return err
			}
			app.print(map[string]string{"deleted": name}, func(w io.Writer) { fmt.Fprintf(w, "Source %s deleted.\n", name) })
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "source name")
	requireFlags(cmd, "name")
	return cmd
}

// builderFlags are the git-builder settings shared by create and edit.
type builderFlags struct {
	url, branch, trigger, subDir, tagPattern, pollInterval, credential string
	pythonIndexURL, rRepositoryURL, checkCommand                       string
	cloneDepth, recurse                                                int
	buildVignettes, check, checkGates, binary                          bool

	webhookSecret string
	initialTags   int
}

func (f *builderFlags) register(cmd *cobra.Command, prefix string) {
	fl := cmd.Flags()
	fl.StringVar(&f.url, prefix+"url", "", "repository URL (https://, ssh://, git://, user@host:path)")
	fl.StringVar(&f.branch, prefix+"branch", "", "branch to follow (default: the remote's default branch)")
	fl.StringVar(&f.trigger, "build-trigger", "", "commits or tags (default commits)")
	fl.StringVar(&f.subDir, prefix+"sub-dir", "", "package directory inside the repository")
	fl.StringVar(&f.tagPattern, "tag-pattern", "", "glob of tags to build (tags trigger)")
	fl.StringVar(&f.pollInterval, "poll-interval", "", "time between polls (default Git.PollInterval)")
	fl.StringVar(&f.credential, prefix+"credential", "", "name of a git credential for a private repository")
	fl.StringVar(&f.pythonIndexURL, "python-index-url", "", "PEP 503 index the build's requirements come from, through the door (default Git.PythonIndexURL; \"\" = the workers')")
	fl.StringVar(&f.rRepositoryURL, "r-repository-url", "", "CRAN-like repository vignette dependencies come from, through the door (default Git.RRepositoryURL)")
	fl.BoolVar(&f.buildVignettes, "build-vignettes", false, "R: build the vignettes, installing what they need from the R repository")
	fl.BoolVar(&f.check, "check", false, "run the check stage after the build: R CMD check --no-manual --as-cran (R), --check-command (Python)")
	fl.BoolVar(&f.checkGates, "check-gates", false, "with --check: a check verdict of WARNING or ERROR fails the build and publishes nothing")
	fl.StringVar(&f.checkCommand, "check-command", "", "Python: the command that runs the tests in the checkout, e.g. \"python3 -m pytest -q\"")
	fl.BoolVar(&f.binary, "binary", false, "R: also build a binary package for the worker's platform (default: the source's setting)")
	fl.IntVar(&f.cloneDepth, "clone-depth", 1, "clone depth; 0 clones the full history")
	fl.IntVar(&f.recurse, "recurse-submodules", 0, "submodule recursion depth")
	fl.StringVar(&f.webhookSecret, "webhook-secret", "", "secret that webhooks of this repository must prove (16+ characters; \"\" removes it)")
	fl.IntVar(&f.initialTags, "initial-tags", 1, "tags trigger: how many of the newest matching tags a new builder builds")
}

// body returns the fields the user set (all given ones for create).
func (f *builderFlags) body(cmd *cobra.Command, prefix string) map[string]any {
	b := map[string]any{}
	set := func(flag, field string, v any) {
		if cmd.Flags().Changed(flag) {
			b[field] = v
		}
	}
	set(prefix+"url", "url", f.url)
	set(prefix+"branch", "branch", f.branch)
	set("build-trigger", "build_trigger", f.trigger)
	set(prefix+"sub-dir", "sub_dir", f.subDir)
	set("tag-pattern", "tag_pattern", f.tagPattern)
	set("poll-interval", "poll_interval", f.pollInterval)
	set(prefix+"credential", "credential", f.credential)
	set("python-index-url", "python_index_url", f.pythonIndexURL)
	set("r-repository-url", "r_repository_url", f.rRepositoryURL)
	set("build-vignettes", "build_vignettes", f.buildVignettes)
	set("check", "check", f.check)
	set("check-gates", "check_gates", f.checkGates)
	set("check-command", "check_command", f.checkCommand)
	set("binary", "binary", f.binary)
	set("clone-depth", "clone_depth", f.cloneDepth)
	set("recurse-submodules", "recurse_submodules", f.recurse)
	set("webhook-secret", "webhook_secret", f.webhookSecret)
	set("initial-tags", "initial_tags", f.initialTags)
	return b
}

func (app *App) createBuilder() *cobra.Command {
	var source, name string
	var f builderFlags
	var wait bool
	cmd := &cobra.Command{
		Use:   "git-builder",
		Short: "Create a git-builder and build it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := f.body(cmd, "")
			if name != "" {
				body["name"] = name
			}
			var b apiv1.Builder
			if err := app.client.do(cmd.Context(), "POST", "/api/v1/sources/"+url.PathEscape(source)+"/git-builders", body, &b); err != nil {
				return err
			}
			if app.output == "human" {
				fmt.Fprintf(app.Stdout, "Git-builder %s created in source %s.\n", b.Name, b.Source)
			}
			if !wait {
				app.print(b, func(io.Writer) {})
				return nil
			}
			if app.output == "human" {
				fmt.Fprintln(app.Stdout, "Cloning repo and waiting for the initial package build...")
			}
			return app.startAndWait(cmd, builderPath(b.Source, b.Name)+"/run", map[string]any{}, true)
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "source name")
	cmd.Flags().StringVar(&name, "name", "", "git-builder name (R builders default to the DESCRIPTION's package name)")
	f.register(cmd, "")
	cmd.Flags().BoolVar(&wait, "wait", true, "build now and wait for the build (--wait=false to return at once)")
	requireFlags(cmd, "source", "url")
	return cmd
}

func builderPath(source, name string) string {
	return "/api/v1/sources/" + url.PathEscape(source) + "/git-builders/" + url.PathEscape(name)
}

func (app *App) editBuilder() *cobra.Command {
	var source, name string
	var f builderFlags
	cmd := &cobra.Command{
		Use: "git-builder", Short: "Change a git-builder's settings", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := f.body(cmd, "new-")
			if cmd.Flags().Changed("remove-sub-dir") {
				body["sub_dir"] = ""
			}
			if cmd.Flags().Changed("remove-credential") {
				body["credential"] = ""
			}
			if len(body) == 0 {
				return fmt.Errorf("nothing to change: give at least one --new-… or setting flag")
			}
			var b apiv1.Builder
			if err := app.client.do(cmd.Context(), "PATCH", builderPath(source, name), body, &b); err != nil {
				return err
			}
			app.print(b, func(w io.Writer) { fmt.Fprintf(w, "Git-builder %s in source %s updated.\n", b.Name, b.Source) })
			return nil
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "source name")
	cmd.Flags().StringVar(&name, "name", "", "git-builder name")
	f.register(cmd, "new-")
	cmd.Flags().Bool("remove-sub-dir", false, "build from the repository root")
	cmd.Flags().Bool("remove-credential", false, "use no credential")
	requireFlags(cmd, "source", "name")
	return cmd
}

func (app *App) deleteBuilder() *cobra.Command {
	var source, name string
	cmd := &cobra.Command{
		Use: "git-builder", Short: "Delete a git-builder (its builds stay listed)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := app.client.do(cmd.Context(), "DELETE", builderPath(source, name), nil, nil); err != nil {
				return err
			}
			app.print(map[string]string{"deleted": source + "/" + name}, func(w io.Writer) {
				fmt.Fprintf(w, "Git-builder %s in source %s deleted.\n", name, source)
			})
			return nil
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "source name")
	cmd.Flags().StringVar(&name, "name", "", "git-builder name")
	requireFlags(cmd, "source", "name")
	return cmd
}

func (app *App) runBuilder() *cobra.Command {
	var source, name string
	var wait bool
	cmd := &cobra.Command{
		Use: "git-builder", Short: "Build the branch head, or the newest matching tag", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.startAndWait(cmd, builderPath(source, name)+"/run", map[string]any{}, wait)
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "source name")
	cmd.Flags().StringVar(&name, "name", "", "git-builder name")
	cmd.Flags().BoolVar(&wait, "wait", true, "wait for the build and show its progress")
	requireFlags(cmd, "source", "name")
	return cmd
}

func (app *App) rerunBuilder() *cobra.Command {
	var source, name, tag, sha string
	var wait bool
	cmd := &cobra.Command{
		Use: "git-builder", Short: "Build a given --tag or --commit-sha again", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (tag == "") == (sha == "") {
				return fmt.Errorf("give exactly one of --tag or --commit-sha")
			}
			body := map[string]any{"tag": tag}
			if sha != "" {
				body = map[string]any{"commit_sha": sha}
			}
			return app.startAndWait(cmd, builderPath(source, name)+"/rerun", body, wait)
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "source name")
	cmd.Flags().StringVar(&name, "name", "", "git-builder name")
	cmd.Flags().StringVar(&tag, "tag", "", "tag to build, as that release, on any builder (a builder's tag_pattern only says what polling builds)")
	cmd.Flags().StringVar(&sha, "commit-sha", "", "commit to build")
	cmd.Flags().BoolVar(&wait, "wait", true, "wait for the build and show its progress")
	requireFlags(cmd, "source", "name")
	return cmd
}

// startAndWait posts a run or rerun, then follows the builds it names.
func (app *App) startAndWait(cmd *cobra.Command, path string, body any, wait bool) error {
	var res apiv1.Run
	if err := app.client.do(cmd.Context(), "POST", path, body, &res); err != nil {
		return err
	}
	if !wait {
		app.print(res, func(w io.Writer) {
			for _, b := range res.Builds {
				fmt.Fprintf(w, "Build %d queued: %s %s at %s.\n", b.ID, b.Builder, b.Ref, short(b.SHA))
			}
		})
		return nil
	}
	final, err := app.follow(cmd, res.Builds)
	if err != nil {
		return err
	}
	if app.output == "json" {
		app.print(apiv1.Run{Builds: final, New: res.New}, nil)
	}
	var failed []int64
	for _, b := range final {
		if b.Status != apiv1.StatusSucceeded {
			failed = append(failed, b.ID)
		}
	}
	if len(failed) > 0 {
		return &buildFailed{ids: failed}
	}
	return nil
}

// follow polls builds until all are finished, drawing one live line per
// build on a terminal, or a plain line per change otherwise.
func (app *App) follow(cmd *cobra.Command, builds []*apiv1.Build) ([]*apiv1.Build, error) {
	human := app.output == "human"
	last := make([]string, len(builds))
	start := time.Now()
	drawn := false
	for {
		done := true
		for i, b := range builds {
			if !apiv1.Terminal(b.Status) {
				var nb apiv1.Build
				if err := app.client.do(cmd.Context(), "GET", fmt.Sprintf("/api/v1/builds/%d", b.ID), nil, &nb); err != nil {
					return nil, err
				}
				builds[i] = &nb
			}
			if !apiv1.Terminal(builds[i].Status) {
				done = false
			}
		}
		if human {
			if app.IsTerminal {
				if drawn {
					fmt.Fprintf(app.Stdout, "\033[%dA", len(builds))
				}
				for _, b := range builds {
					fmt.Fprintf(app.Stdout, "\r\033[K%s\n", progressLine(b, time.Since(start)))
				}
				drawn = true
			} else {
				for i, b := range builds {
					line := progressLine(b, 0)
					if line != last[i] {
						fmt.Fprintln(app.Stdout, line)
						last[i] = line
					}
				}
			}
		}
		if done {
			if human {
				for _, b := range builds {
					for _, f := range fetched(b) {
						fmt.Fprintf(app.Stdout, "Build %d fetched through the door: %s\n", b.ID, f)
					}
					for _, w := range b.Warnings {
						fmt.Fprintf(app.Stdout, "Build %d warning: %s\n", b.ID, w)
					}
				}
			}
			return builds, nil
		}
		select {
		case <-cmd.Context().Done():
			return nil, cmd.Context().Err()
		case <-time.After(app.PollInterval):
		}
	}
}

// builtFor says what a binary or platform wheel was built for:
// " (debian-12, R 4.2)"; "" for what is for any platform.
func builtFor(a apiv1.Artifact) string {
	switch {
	case a.Platform == "":
		return ""
	case a.RVersion != "":
		return " (" + a.Platform + ", R " + a.RVersion + ")"
	}
	return " (" + a.Platform + ")"
}

func progressLine(b *apiv1.Build, elapsed time.Duration) string {
	s := fmt.Sprintf("Build %d %s@%s (%s): %s", b.ID, b.Builder, b.Ref, short(b.SHA), b.Status)
	switch b.Status {
	case apiv1.StatusSucceeded:
		files := make([]string, len(b.Artifacts))
		for i, a := range b.Artifacts {
			files[i] = a.File + builtFor(a)
		}
		s += fmt.Sprintf(" %s %s → %s", b.Package, versionOf(b), strings.Join(files, ", "))
		switch n := len(b.Warnings); n {
		case 0:
		case 1:
			s += " (1 metadata warning)"
		default:
			s += fmt.Sprintf(" (%d metadata warnings)", n)
		}
		if b.Check != nil {
			s += ", check " + checkColumn(b.Check)
		}
	case apiv1.StatusFailed, apiv1.StatusCanceled:
		if b.Detail != "" {
			s += ": " + oneLine(b.Detail)
		}
		s += fmt.Sprintf(" (pkgfleet logs --build-id %d)", b.ID)
	case apiv1.StatusRunning:
		s += fmt.Sprintf(", attempt %d of %d", b.Attempts, b.MaxAttempts)
	default:
		if b.Detail != "" {
			s += ": " + oneLine(b.Detail)
		}
	}
	if elapsed > 0 && !apiv1.Terminal(b.Status) {
		s += fmt.Sprintf(" [%s]", elapsed.Truncate(time.Second))
	}
	return s
}

// fetched names what a build got through its door (its provenance), one
// "name version sha256:prefix" each.
func fetched(b *apiv1.Build) []string {
	out := make([]string, len(b.Fetched))
	for i, f := range b.Fetched {
		out[i] = fmt.Sprintf("%s %s sha256:%s", f.Name, f.Version, short(f.SHA256))
		if len(f.Environments) > 0 {
			out[i] += " (" + strings.Join(f.Environments, "+") + ")"
		}
	}
	return out
}

// versionOf is the build's version with where git says it comes from
// ("1.2.1.dev3 (git describe v1.2-3-gabcdef0)").
func versionOf(b *apiv1.Build) string {
	if b.Describe == "" || b.Version == "" {
		return b.Version
	}
	return b.Version + " (git describe " + b.Describe + ")"
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func (app *App) listSources() *cobra.Command {
	return &cobra.Command{
		Use: "sources", Short: "List sources", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res apiv1.Sources
			if err := app.client.do(cmd.Context(), "GET", "/api/v1/sources", nil, &res); err != nil {
				return err
			}
			app.print(res, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tTYPE\tCREATED")
				for _, s := range res.Sources {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Type, s.CreatedAt.Format(time.RFC3339))
				}
				tw.Flush()
			})
			return nil
		},
	}
}

func (app *App) listBuilders() *cobra.Command {
	var source string
	cmd := &cobra.Command{
		Use: "git-builders", Short: "List the git-builders of a source", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The API answers a page at a time; this lists them all.
			var res apiv1.Builders
			for cursor := ""; ; {
				var page apiv1.Builders
				path := "/api/v1/sources/" + url.PathEscape(source) + "/git-builders?cursor=" + url.QueryEscape(cursor)
				if err := app.client.do(cmd.Context(), "GET", path, nil, &page); err != nil {
					return err
				}
				res.Builders = append(res.Builders, page.Builders...)
				if cursor = page.NextCursor; cursor == "" {
					break
				}
			}
			app.print(res, func(w io.Writer) {
				fmt.Fprintln(w, "Git Builders:")
				for _, b := range res.Builders {
					fmt.Fprintf(w, "- %s\n    Source: %s\n    URL: %s\n    Trigger: %s\n", b.Name, b.Source, apiv1.DisplayURL(b.URL), b.BuildTrigger)
					fmt.Fprintf(w, "    Branch: %s\n", b.Branch)
					if b.TagPattern != "" {
						fmt.Fprintf(w, "    Tag pattern: %s\n", b.TagPattern)
					}
					if b.SubDir != "" {
						fmt.Fprintf(w, "    Sub-directory: %s\n", b.SubDir)
					}
					fmt.Fprintf(w, "    Clone depth: %d\n", b.CloneDepth)
					if c := checkSetting(b); c != "" {
						fmt.Fprintf(w, "    Check: %s\n", c)
					}
					if b.Binary != nil {
						fmt.Fprintf(w, "    Binary: %t\n", *b.Binary) // absent: the source's default
					}
				}
			})
			return nil
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "source name")
	requireFlags(cmd, "source")
	return cmd
}

func (app *App) listBuilds() *cobra.Command {
	var source, name, status string
	var count int
	cmd := &cobra.Command{
		Use: "git-builds", Short: "List builds, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"source": source, "builder": name, "status": status} {
				if v != "" {
					q.Set(k, v)
				}
			}
			q.Set("limit", strconv.Itoa(count))
			var res apiv1.Builds
			if err := app.client.do(cmd.Context(), "GET", "/api/v1/builds?"+q.Encode(), nil, &res); err != nil {
				return err
			}
			app.print(res, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSOURCE\tBUILDER\tREF\tCOMMIT\tSTATUS\tVERSION\tCHECK\tATTEMPTS\tFETCHED\tPHASES")
				for _, b := range res.Builds {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", b.ID, b.Source, b.Builder, b.Ref, short(b.SHA), b.Status, dash(versionOf(b)), dash(checkColumn(b.Check)), b.Attempts, b.MaxAttempts,
						dash(strings.Join(fetched(b), ", ")), dash(phases(b.Phases)))
				}
				tw.Flush()
			})
			return nil
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "only this source")
	cmd.Flags().StringVar(&name, "name", "", "only this git-builder (with --source)")
	cmd.Flags().StringVar(&status, "status", "", "only builds in this status")
	cmd.Flags().IntVar(&count, "count", 100, "how many builds at most")
	return cmd
}

// checkColumn is a build's check verdict in a few characters: the worst
// verdict with R CMD check's counts ("WARNING 1W 2N"), and "gated" when it
// held the build back.
func checkColumn(c *apiv1.Check) string {
	if c == nil {
		return ""
	}
	s := c.Verdict
	for _, n := range []struct {
		count  int
		letter string
	}{{c.Errors, "E"}, {c.Warnings, "W"}, {c.Notes, "N"}} {
		if n.count > 0 {
			s += fmt.Sprintf(" %d%s", n.count, n.letter)
		}
	}
	if c.Gated {
		s += " gated"
	}
	return s
}

// checkSetting says what a builder's check stage does ("" when off).
func checkSetting(b *apiv1.Builder) string {
	if !b.Check {
		return ""
	}
	s := "R CMD check --no-manual --as-cran"
	if b.Language == apiv1.LangPython {
		s = b.CheckCommand
	}
	if b.CheckGates {
		return s + " (gates publishing: WARNING or ERROR fails the build)"
	}
	return s + " (recorded, does not gate)"
}

// phases says how long each phase of a build took, in one line.
func phases(ps []apiv1.Phase) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		d := time.Duration(p.MS * float64(time.Millisecond))
		switch {
		case d >= time.Second:
			d = d.Round(100 * time.Millisecond)
		case d >= time.Millisecond:
			d = d.Round(time.Millisecond)
		}
		out[i] = p.Phase + " " + d.String()
	}
	return strings.Join(out, ", ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (app *App) logs() *cobra.Command {
	var id int64
	var follow bool
	cmd := &cobra.Command{
		Use: "logs", Short: "Print a build's log (--follow to stream it until the build ends)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var offset int64
			for {
				data, next, status, err := app.client.logChunk(cmd.Context(), id, offset)
				if err != nil {
					return err
				}
				_, _ = app.Stdout.Write(data)
				offset = next
				if apiv1.Terminal(status) {
					// Where the time went, once the build is over.
					var b apiv1.Build
					if err := app.client.do(cmd.Context(), "GET", fmt.Sprintf("/api/v1/builds/%d", id), nil, &b); err == nil && len(b.Phases) > 0 {
						fmt.Fprintf(app.Stdout, "==> phases: %s\n", phases(b.Phases))
					}
				}
				if !follow || apiv1.Terminal(status) {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(app.PollInterval):
				}
			}
		},
	}
	cmd.Flags().Int64Var(&id, "build-id", 0, "build (transaction) id")
	cmd.Flags().Int64Var(&id, "transaction-id", 0, "same as --build-id (PPM's name)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the build ends")
	cmd.MarkFlagsOneRequired("build-id", "transaction-id")
	return cmd
}

func (app *App) cancel() *cobra.Command {
	var id int64
	cmd := &cobra.Command{
		Use: "cancel", Short: "Cancel a queued, waiting or running build", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var b apiv1.Build
			if err := app.client.do(cmd.Context(), "POST", fmt.Sprintf("/api/v1/builds/%d/cancel", id), map[string]any{}, &b); err != nil {
				return err
			}
			app.print(b, func(w io.Writer) { fmt.Fprintf(w, "Build %d: %s\n", b.ID, b.Status) })
			return nil
		},
	}
	cmd.Flags().Int64Var(&id, "build-id", 0, "build id")
	requireFlags(cmd, "build-id")
	return cmd
}

// listWorkers shows the live fleet.
func (app *App) listWorkers() *cobra.Command {
	return &cobra.Command{
		Use: "workers", Short: "List the live workers of the fleet", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res apiv1.Workers
			if err := app.client.do(cmd.Context(), "GET", "/api/v1/workers", nil, &res); err != nil {
				return err
			}
			app.print(res, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tLANGUAGES\tSANDBOX TIER\tSLOTS\tRUNNING\tUSER NAMESPACES (in use/needed/max)")
				for _, wk := range res.Workers {
					var langs []string
					for _, name := range []string{"r", "python"} {
						if l, ok := wk.Languages[name]; ok {
							langs = append(langs, fmt.Sprintf("%s %s (%s)", name, l.Version, l.Sandbox))
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d/%d/%d\n", wk.Name, strings.Join(langs, ", "), cmp.Or(wk.SandboxTier, "-"), wk.Slots, wk.Running,
						wk.NamespacesInUse, wk.NamespacesNeeded, wk.MaxUserNamespaces)
				}
				tw.Flush()
			})
			return nil
		},
	}
}

// namespaces shows PPM's user-namespace budget against the live workers.
func (app *App) namespaces() *cobra.Command {
	return &cobra.Command{
		Use: "namespaces", Short: "Show the user-namespace budget of the fleet", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res apiv1.NamespaceBudget
			if err := app.client.do(cmd.Context(), "GET", "/api/v1/namespaces", nil, &res); err != nil {
				return err
			}
			app.print(res, func(w io.Writer) {
				b := res.Budget
				fmt.Fprintf(w, "Required by PPM's formula %s:\n  ((%d × %d) + %d) × 2 = %d user namespaces\n",
					b.Formula, b.TagBuilders, b.BuildConcurrency, b.CommitBuilders, b.Required)
				fmt.Fprintf(w, "Sandboxed workers: %d slots, %d user namespaces at most\n", b.FleetSlots, b.FleetNamespaces)
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "WORKER\tSLOTS\tNEEDED\tMAX\tIN USE\tFITS")
				for _, wk := range res.Workers {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%v\n", wk.Name, wk.Slots, wk.Needed, wk.MaxUserNamespaces, wk.InUse, wk.OK)
				}
				tw.Flush()
				for _, warn := range b.Warnings {
					fmt.Fprintln(w, "WARNING: "+warn)
				}
			})
			return nil
		},
	}
}
