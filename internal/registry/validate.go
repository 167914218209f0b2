package registry

import (
	"net/url"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/door"

	"github.com/pkgfleet/pkgfleet/internal/git"
)

// Policy holds the settings that decide which builders are acceptable.
type Policy struct {
	URLs git.URLPolicy
}

// ValidateBuilder checks and normalises a builder before it is stored.
func (p Policy) ValidateBuilder(b *Builder) error {
	if err := ValidateName("git-builder name", b.Name); err != nil {
		return err
	}
	if err := p.URLs.ValidateURL(b.URL); err != nil {
		return invalid("%s", err.Error())
	}
	if b.Branch != "" {
		if err := git.ValidateRef(b.Branch); err != nil {
			return invalid("branch %q %s", b.Branch, err.Error())
		}
	}
	switch b.BuildTrigger {
	case "":
		b.BuildTrigger = TriggerCommits
	case TriggerCommits, TriggerTags:
	default:
		return invalid("build_trigger must be %q or %q, got %q", TriggerCommits, TriggerTags, b.BuildTrigger)
	}
	if b.TagPattern != "" {
		if b.BuildTrigger != TriggerTags {
			return invalid("tag_pattern only applies to build_trigger %q", TriggerTags)
		}
		if _, err := git.MatchTag(b.TagPattern, "x"); err != nil {
			return invalid("tag_pattern %q is not a valid glob", b.TagPattern)
		}
		if len(b.TagPattern) > 255 {
			return invalid("tag_pattern is longer than 255 characters")
		}
	}
	if err := ValidateSubDir(b.SubDir); err != nil {
		return err
	}
	if b.CloneDepth < 0 {
		return invalid("clone_depth must be 0 (full clone) or more")
	}
	if b.RecurseSubmodules < 0 || b.RecurseSubmodules > 10 {
		return invalid("recurse_submodules must be between 0 and 10")
	}
	if b.InitialTags != nil && (*b.InitialTags < 0 || *b.InitialTags > 1000) {
		return invalid("initial_tags must be between 0 and 1000")
	}
	if b.PollInterval != 0 && time.Duration(b.PollInterval) < 10*time.Second {
		return invalid("poll_interval must be at least 10s")
	}
	for _, o := range []struct{ field, url, lang string }{
		{"python_index_url", b.PythonIndexURL, LangPython}, {"r_repository_url", b.RRepositoryURL, LangR},
	} {
		if o.url == "" {
			continue
		}
		if b.Language != "" && b.Language != o.lang {
			return invalid("%s applies to %s builders only", o.field, map[string]string{LangPython: TypeGitPython, LangR: TypeGit}[o.lang])
		}
		if err := door.CheckURL(o.url); err != nil {
			return invalid("%s: %s", o.field, err.Error())
		}
		if u, _ := url.Parse(o.url); u.User != nil {
			return invalid("%s must carry no credentials: give them in the workers' Git.PythonIndexURL or Git.RRepositoryURL of the same host, which the door adds to the builder's requests", o.field)
		}
	}
	if b.BuildVignettes && b.Language != "" && b.Language != LangR {
		return invalid("build_vignettes applies to git (R) builders only")
	}
	return nil
}
