package registry

import (
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/door"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/netpolicy"
)

// Policy holds the settings that decide which builders are acceptable.
type Policy struct {
	URLs git.URLPolicy
	// Net refuses a URL whose host is an address the outbound policy
	// refuses (nil: the default policy). Only a literal address can be
	// judged here; a name is judged when it is connected to.
	Net *netpolicy.Policy
}

// checkHost refuses raw when its host is a literal address the outbound
// policy refuses.
func (p Policy) checkHost(field, raw string) error {
	host, _ := git.RemoteHost(raw)
	if err := p.Net.CheckLiteral(host); err != nil {
		return invalid("%s: %s", field, err.Error())
	}
	return nil
}

// ValidateBuilder checks and normalises a builder before it is stored.
func (p Policy) ValidateBuilder(b *Builder) error {
	if err := ValidateName("git-builder name", b.Name); err != nil {
		return err
	}
	if err := p.URLs.ValidateURL(b.URL); err != nil {
		return invalid("%s", err.Error())
	}
	if err := p.checkHost("url", b.URL); err != nil {
		return err
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
		if err := p.checkHost(o.field, o.url); err != nil {
			return err
		}
		if u, _ := url.Parse(o.url); u.User != nil {
			return invalid("%s must carry no credentials: give them in the workers' Git.PythonIndexURL or Git.RRepositoryURL of the same host, which the door adds to the builder's requests", o.field)
		}
	}
	if b.BuildVignettes && b.Language != "" && b.Language != LangR {
		return invalid("build_vignettes applies to git (R) builders only")
	}
	if b.Binary != nil && *b.Binary && b.Language != "" && b.Language != LangR {
		return invalid("binary applies to git (R) builders only: a wheel is already a binary")
	}
	return validateCheck(b)
}

// validateCheck checks the check stage's settings: check runs R CMD check
// on an R builder, check_command on a Python builder, and check_gates
// needs a check to gate on.
func validateCheck(b *Builder) error {
	cmd := b.CheckCommand
	switch {
	case cmd != "" && b.Language != "" && b.Language != LangPython:
		return invalid("check_command applies to git-python builders only (R builders run R CMD check with check: true)")
	case len(cmd) > 1000:
		return invalid("check_command is longer than 1000 characters")
	case strings.ContainsAny(cmd, "\x00\r\n"):
		return invalid("check_command must be one line")
	case cmd != "" && strings.TrimSpace(cmd) == "":
		return invalid("check_command is blank")
	case b.Check && b.Language == LangPython && cmd == "":
		return invalid("check on a git-python builder needs check_command, the command that runs its tests (e.g. python3 -m pytest -q)")
	case b.CheckGates && !b.Check:
		return invalid("check_gates needs check: true (there is no check to gate on)")
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ValidateName checks a source or builder name.
func ValidateName(what, name string) error {
	switch {
	case name == "":
		return invalid("%s is required", what)
	case len(name) > 100:
		return invalid("%s must be at most 100 characters", what)
	case !nameRE.MatchString(name):
		return invalid("%s %q may contain only letters, digits, '.', '_' and '-'", what, name)
	case name == "." || name == "..":
		return invalid("%s must not be %q", what, name)
	}
	return nil
}

// ValidateSubDir checks that a sub-directory stays inside the repository.
func ValidateSubDir(dir string) error {
	if dir == "" {
		return nil
	}
	if strings.HasPrefix(dir, "/") {
		return invalid("sub_dir must be relative to the repository root")
	}
	if strings.ContainsAny(dir, "\\\x00\n\r") {
		return invalid("sub_dir contains a forbidden character")
	}
	for _, part := range strings.Split(dir, "/") {
		if part == ".." {
			return invalid("sub_dir must not contain '..'")
		}
		if strings.HasPrefix(part, "-") {
			return invalid("sub_dir parts must not start with '-'")
		}
	}
	return nil
}
