package credential

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"

	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/redis/go-redis/v9"
)

const maxHosts = 64

var knownKeyType = regexp.MustCompile(`^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+|rsa-sha2-[0-9]+)$`)

// CanonicalHosts checks a credential's hosts and returns them canonical
// (scheme://host:port), sorted and without repeats. The scheme defaults to
// the credential's type, and must be it: an https token goes to https
// servers, an ssh key to ssh servers.
func CanonicalHosts(typ string, hosts []string) ([]string, error) {
	bad := func(format string, a ...any) error { return &registry.ValidationError{Msg: fmt.Sprintf(format, a...)} }
	if len(hosts) == 0 {
		return nil, bad("hosts is required: where the credential may be sent, e.g. [\"%s://git.example.com\"] or [\"%s://*.example.com:8443\"] (scheme, host, port; a wildcard for one subdomain label at most)", typ, typ)
	}
	if len(hosts) > maxHosts {
		return nil, bad("hosts may name at most %d hosts", maxHosts)
	}
	seen := map[string]bool{}
	out := []string{}
	for _, h := range hosts {
		p, err := git.ParseHostPattern(strings.TrimSpace(h), typ)
		if err != nil {
			return nil, bad("hosts: %v", err)
		}
		if p.Scheme != typ {
			return nil, bad("hosts: %s is not for an %s credential (its hosts are %s://…)", p, typ, typ)
		}
		if !seen[p.String()] {
			seen[p.String()] = true
			out = append(out, p.String())
		}
	}
	sort.Strings(out)
	return out, nil
}

// parseHosts reads stored (canonical) hosts.
func parseHosts(typ string, hosts []string) ([]git.HostPattern, error) {
	out := make([]git.HostPattern, 0, len(hosts))
	for _, h := range hosts {
		p, err := git.ParseHostPattern(h, typ)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// checkKnownHosts accepts known_hosts lines, or none when the admin's
// Git.SSHKnownHostsFile stands in for them: without host keys to check,
// ssh would offer the key to whichever server answers.
func (s *Store) checkKnownHosts(lines string) error {
	bad := func(msg string) error { return &registry.ValidationError{Msg: msg} }
	if strings.TrimSpace(lines) == "" {
		if s.SSHKnownHostsFile == "" {
			return bad("an ssh credential needs known_hosts (the host keys of its servers, as in ~/.ssh/known_hosts, e.g. from ssh-keyscan), or the admin's Git.SSHKnownHostsFile: ssh checks the server's key (StrictHostKeyChecking=yes) before it offers the credential")
		}
		return nil
	}
	if len(lines) > 64<<10 {
		return bad("known_hosts must be at most 64 KiB")
	}
	if strings.ContainsAny(lines, "\r\x00") {
		return bad("known_hosts must be plain known_hosts lines")
	}
	for _, l := range strings.Split(lines, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) > 0 && strings.HasPrefix(f[0], "@") {
			f = f[1:] // @cert-authority, @revoked
		}
		if len(f) < 3 || !knownKeyType.MatchString(f[1]) {
			return bad(fmt.Sprintf("known_hosts line %q is not \"[marker] hosts keytype key\"", l))
		}
		if _, err := base64.StdEncoding.DecodeString(f[2]); err != nil {
			return bad(fmt.Sprintf("known_hosts line %q has a key that is not base64", l))
		}
	}
	return nil
}

// CheckURL checks that a credential may be used for a repository URL: its
// type fits the URL's scheme, and one of its hosts matches the URL's
// scheme, host and port (user@host:path is ssh://host:22). The error
// names the rule: which credential, which hosts it allows, which host the
// URL names.
func CheckURL(info Info, url string) error {
	bad := func(format string, a ...any) error { return &registry.ValidationError{Msg: fmt.Sprintf(format, a...)} }
	e, err := git.URLEndpoint(url)
	if err != nil {
		return bad("credential %q: %v", info.Name, err)
	}
	switch {
	case info.Type == HTTPS && e.Scheme != "https":
		return bad("an https credential needs an https:// url")
	case info.Type == SSH && e.Scheme != "ssh":
		return bad("an ssh credential needs an ssh:// or user@host:path url")
	}
	if len(info.Hosts) == 0 {
		return bad("credential %q names no hosts it may be sent to (it was stored before credentials were bound to hosts, and no git-builder used it): an admin sets them with PATCH /api/v1/git-credentials/%s {\"hosts\": [...]} or pkgfleet edit git-credential --name %s --host …", info.Name, info.Name, info.Name)
	}
	patterns, err := parseHosts(info.Type, info.Hosts)
	if err != nil {
		return fmt.Errorf("credential %q: %w", info.Name, err)
	}
	for _, p := range patterns {
		if p.Match(e) {
			return nil
		}
	}
	return bad("credential %q may be sent only to %s; the url names %s", info.Name, strings.Join(info.Hosts, ", "), e)
}

// casScript replaces a credential's record only if it is still the one
// read: edits and migrations from several API replicas never overwrite
// each other.
var casScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`)

// update applies change to the named record until it is stored unraced.
// change returns false to leave the record as it is.
func (s *Store) update(ctx context.Context, name string, change func(*record) (bool, error)) (record, bool, error) {
	for {
		r, raw, err := s.recordRaw(ctx, name)
		if err != nil {
			return r, false, err
		}
		ok, err := change(&r)
		if err != nil || !ok {
			return r, false, err
		}
		data, _ := json.Marshal(r)
		n, err := casScript.Run(ctx, s.rdb, []string{key}, name, raw, data).Int()
		if err != nil {
			return r, false, fmt.Errorf("credential %q: %w", name, err)
		}
		if n == 1 {
			return r, true, nil
		}
	}
}

// SetHosts replaces a credential's hosts and, for ssh, its known_hosts
// (nil: unchanged). Its secrets stay as they are.
func (s *Store) SetHosts(ctx context.Context, name string, hosts []string, knownHosts *string) (Info, error) {
	r, _, err := s.update(ctx, name, func(r *record) (bool, error) {
		canon, err := CanonicalHosts(r.Type, hosts)
		if err != nil {
			return false, err
		}
		r.Hosts = canon
		if knownHosts != nil {
			if r.Type != SSH && *knownHosts != "" {
				return false, &registry.ValidationError{Msg: "known_hosts applies to ssh credentials only"}
			}
			r.KnownHosts = *knownHosts
		}
		if r.Type == SSH {
			return true, s.checkKnownHosts(r.KnownHosts)
		}
		return true, nil
	})
	return r.shown(), err
}

// Migrate binds the credentials stored before credentials had hosts to
// the hosts of the git-builders that use them today (scheme, host and
// port of each builder's URL), and logs each one. A credential no builder
// uses gets no hosts: it is refused everywhere until an admin sets them.
// Migrated credentials are skipped, and each record is written with a
// compare-and-set, so every API replica may run it at start, at once.
// It returns the names it migrated.
func (s *Store) Migrate(ctx context.Context, builders []*registry.Builder, log *slog.Logger) ([]string, error) {
	names, err := s.rdb.HKeys(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("migrate credentials: %w", err)
	}
	sort.Strings(names)
	var migrated []string
	for _, name := range names {
		var users []string
		r, changed, err := s.update(ctx, name, func(r *record) (bool, error) {
			if r.Hosts != nil {
				return false, nil // bound already
			}
			hosts, seen := []string{}, map[string]bool{}
			users = nil
			for _, b := range builders {
				if b.Credential != name {
					continue
				}
				e, err := git.URLEndpoint(b.URL)
				if err != nil || e.Scheme != r.Type {
					continue // a URL the credential could not be used for anyway
				}
				users = append(users, b.Key())
				if h := e.String(); !seen[h] {
					seen[h] = true
					hosts = append(hosts, h)
				}
			}
			sort.Strings(hosts)
			r.Hosts = hosts
			return true, nil
		})
		if err != nil {
			return migrated, fmt.Errorf("migrate credential %q: %w", name, err)
		}
		if !changed {
			continue
		}
		migrated = append(migrated, name)
		if len(r.Hosts) == 0 {
			log.Warn("git credential stored without hosts and used by no git-builder: bound to no hosts, unusable until an admin sets them", "name", name)
			continue
		}
		log.Info("git credential stored without hosts bound to the hosts of the git-builders that use it", "name", name, "hosts", r.Hosts, "builders", users)
	}
	return migrated, nil
}
