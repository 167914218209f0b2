package credential

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

func keyFile(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "key")
	os.WriteFile(p, []byte(content), 0o600)
	return p
}

func TestSealedAtRestOpenedWithTheSameKeyOnly(t *testing.T) {
	t.Parallel()
	rdb, _ := redisServer.DB(t)
	ctx := context.Background()
	s, err := NewStore(rdb, keyFile(t, strings.Repeat("k", 40)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, &Credential{Name: "gh", Type: HTTPS, Hosts: []string{"github.com"}, Username: "bot", Password: "tok-123456"}); err != nil {
		t.Fatal(err)
	}
	raw, _ := rdb.HGet(ctx, "pkgfleet:credentials", "gh").Result()
	if strings.Contains(raw, "tok-123456") || strings.Contains(raw, "bot") {
		t.Fatalf("stored in the clear: %s", raw)
	}
	c, err := s.Open(ctx, "gh")
	if err != nil || c.Password != "tok-123456" || c.Username != "bot" {
		t.Fatalf("Open = %+v, %v", c, err)
	}
	list, _ := s.List(ctx)
	if len(list) != 1 || list[0].Name != "gh" || list[0].Type != HTTPS || strings.Join(list[0].Hosts, ",") != "https://github.com:443" {
		t.Fatalf("List = %+v", list)
	}
	other, _ := NewStore(rdb, keyFile(t, strings.Repeat("x", 40)))
	if _, err := other.Open(ctx, "gh"); err == nil || strings.Contains(err.Error(), "tok-123456") {
		t.Fatalf("another key opened it: %v", err)
	}
	if _, err := NewStore(rdb, keyFile(t, "short")); err == nil {
		t.Fatal("a short key file was accepted")
	}
	none, _ := NewStore(rdb, "")
	if _, err := none.Create(ctx, &Credential{Name: "x", Type: HTTPS, Hosts: []string{"h"}, Username: "a", Password: "b"}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("without a key: %v", err)
	}
}

const (
	testKey        = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
	testKnownHosts = "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
)

func TestValidationAndURLMatching(t *testing.T) {
	t.Parallel()
	var ve *registry.ValidationError
	s := &Store{}
	h := []string{"git.example.com"}
	for _, c := range []Credential{
		{Name: "a", Type: SSH, Hosts: h, KnownHosts: testKnownHosts},
		{Name: "a", Type: SSH, Hosts: h, KnownHosts: testKnownHosts, PrivateKey: testKey, Password: "x"},
		{Name: "a", Type: HTTPS, Hosts: h, Username: "u"},
		{Name: "a", Type: HTTPS, Hosts: h, Username: "u", Password: "p\nq"},
		{Name: "a/b", Type: HTTPS, Hosts: h, Username: "u", Password: "p"},
		{Name: "a", Type: "token", Hosts: h, Password: "p"},
		// Hosts are required, well-formed and of the credential's scheme.
		{Name: "a", Type: HTTPS, Username: "u", Password: "p"},
		{Name: "a", Type: HTTPS, Hosts: []string{"https://*.com"}, Username: "u", Password: "p"},
		{Name: "a", Type: HTTPS, Hosts: []string{"https://h/path"}, Username: "u", Password: "p"},
		{Name: "a", Type: HTTPS, Hosts: []string{"ssh://git.example.com"}, Username: "u", Password: "p"},
		// An ssh key needs host keys to check: its own or the admin's.
		{Name: "a", Type: SSH, Hosts: h, PrivateKey: testKey},
		{Name: "a", Type: SSH, Hosts: h, PrivateKey: testKey, KnownHosts: "not a known hosts line"},
	} {
		if err := s.Validate(&c); !errors.As(err, &ve) {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
	c := Credential{Name: "a", Type: SSH, Hosts: []string{"git.example.com", "ssh://git.example.com:22"}, PrivateKey: testKey}
	if err := (&Store{SSHKnownHostsFile: "/etc/ssh/known"}).Validate(&c); err != nil || strings.Join(c.Hosts, ",") != "ssh://git.example.com:22" {
		t.Errorf("an ssh key with the admin's known hosts: %v, hosts %q", err, c.Hosts)
	}

	https := Info{Name: "ci", Type: HTTPS, Hosts: []string{"https://*.corp.example:8443", "https://git.example.com:443"}}
	ssh := Info{Name: "key", Type: SSH, Hosts: []string{"ssh://git.example.com:22"}}
	for _, ok := range []struct {
		info Info
		url  string
	}{
		{https, "https://git.example.com/r.git"}, {https, "https://a.corp.example:8443/r"},
		{ssh, "git@git.example.com:r.git"}, {ssh, "ssh://git@git.example.com/r"}, {ssh, "ssh://git.example.com:22/r"},
	} {
		if err := CheckURL(ok.info, ok.url); err != nil {
			t.Errorf("CheckURL(%s, %s) = %v", ok.info.Name, ok.url, err)
		}
	}
	for _, bad := range []struct {
		info Info
		url  string
		want string
	}{
		{https, "ssh://git.example.com/r", "needs an https:// url"},
		{ssh, "https://git.example.com/r", "needs an ssh:// or user@host:path url"},
		{https, "https://evil.example/r.git", `credential "ci" may be sent only to https://*.corp.example:8443, https://git.example.com:443; the url names https://evil.example:443`},
		{https, "https://git.example.com:8443/r.git", "the url names https://git.example.com:8443"},
		{https, "https://corp.example:8443/r", "the url names https://corp.example:8443"},
		{ssh, "git@evil.example:r.git", "the url names ssh://evil.example:22"},
		{ssh, "ssh://git.example.com:2222/r", "the url names ssh://git.example.com:2222"},
		{Info{Name: "old", Type: HTTPS, Hosts: []string{}}, "https://git.example.com/r", "names no hosts"},
	} {
		err := CheckURL(bad.info, bad.url)
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("CheckURL(%s, %s) = %v, want a validation error containing %q", bad.info.Name, bad.url, err, bad.want)
		}
	}
}

func TestGitClientRefusesAURLOutsideTheCredentialsHosts(t *testing.T) {
	t.Parallel()
	rdb, _ := redisServer.DB(t)
	ctx := context.Background()
	s, _ := NewStore(rdb, keyFile(t, strings.Repeat("k", 40)))
	if _, err := s.Create(ctx, &Credential{Name: "ci", Type: HTTPS, Hosts: []string{"git.example.com"}, Username: "bot", Password: "tok-abcdef"}); err != nil {
		t.Fatal(err)
	}
	if _, done, err := s.GitClient(ctx, &git.Client{}, "ci", "https://git.example.com/r.git", t.TempDir()); err != nil {
		t.Fatalf("its own host: %v", err)
	} else {
		done()
	}
	_, _, err := s.GitClient(ctx, &git.Client{}, "ci", "https://evil.example/r.git", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "may be sent only to https://git.example.com:443") || strings.Contains(err.Error(), "tok-abcdef") {
		t.Fatalf("another host: %v", err)
	}
	// Narrowing the hosts applies to builders saved before.
	if _, err := s.SetHosts(ctx, "ci", []string{"https://other.example.com"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GitClient(ctx, &git.Client{}, "ci", "https://git.example.com/r.git", t.TempDir()); err == nil {
		t.Fatal("a URL outside the edited hosts was served")
	}
	if c, err := s.Open(ctx, "ci"); err != nil || c.Password != "tok-abcdef" {
		t.Fatalf("the secret after SetHosts: %v", err)
	}
}

// storeUnbound writes a credential as it was stored before credentials
// had hosts: the same sealed record, without the hosts field.
func storeUnbound(t *testing.T, s *Store, rdb *redis.Client, c *Credential) {
	t.Helper()
	ctx := context.Background()
	c.Hosts = []string{"placeholder.invalid"}
	if _, err := s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	raw, _ := rdb.HGet(ctx, key, c.Name).Result()
	var m map[string]any
	json.Unmarshal([]byte(raw), &m)
	delete(m, "hosts")
	delete(m, "known_hosts")
	data, _ := json.Marshal(m)
	rdb.HSet(ctx, key, c.Name, data)
}

func TestMigrationBindsOldCredentialsToTheirBuildersHostsOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	rdb, _ := redisServer.DB(t)
	ctx := context.Background()
	s, _ := NewStore(rdb, keyFile(t, strings.Repeat("k", 40)))
	s.SSHKnownHostsFile = "/etc/pkgfleet/known_hosts"
	const token = "tok-migrate-0123456789"
	storeUnbound(t, s, rdb, &Credential{Name: "ci", Type: HTTPS, Username: "bot", Password: token})
	storeUnbound(t, s, rdb, &Credential{Name: "deploy", Type: SSH, PrivateKey: testKey})
	storeUnbound(t, s, rdb, &Credential{Name: "unused", Type: HTTPS, Username: "bot", Password: token})
	if _, err := s.Create(ctx, &Credential{Name: "new", Type: HTTPS, Hosts: []string{"new.example"}, Username: "u", Password: "p"}); err != nil {
		t.Fatal(err)
	}
	if info, _ := s.Info(ctx, "ci"); len(info.Hosts) != 0 {
		t.Fatalf("an unmigrated credential shows hosts %q", info.Hosts)
	}
	builders := []*registry.Builder{
		{Source: "s", Name: "a", URL: "https://git.example.com/a.git", Credential: "ci"},
		{Source: "s", Name: "b", URL: "https://git.example.com:443/b.git", Credential: "ci"},
		{Source: "s", Name: "c", URL: "https://mirror.example.org:8443/c.git", Credential: "ci"},
		{Source: "s", Name: "d", URL: "git@code.example.net:d.git", Credential: "deploy"},
		{Source: "s", Name: "e", URL: "https://git.example.com/e.git", Credential: "new"},
		{Source: "s", Name: "f", URL: "https://public.example/f.git"},
	}

	// Four API replicas start at once.
	logs := make([]*testenv.Capture, 4)
	migrated := make([][]string, 4)
	var wg sync.WaitGroup
	for i := range logs {
		var log *slog.Logger
		log, logs[i] = testenv.CapturingLogger(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if migrated[i], err = s.Migrate(ctx, builders, log); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var all []string
	var logged strings.Builder
	for i := range logs {
		all = append(all, migrated[i]...)
		logged.WriteString(logs[i].String())
	}
	sort.Strings(all)
	if strings.Join(all, ",") != "ci,deploy,unused" {
		t.Errorf("migrated %q, want each old credential once", all)
	}
	text := logged.String()
	for _, want := range []string{
		`level=INFO msg="git credential stored without hosts bound to the hosts of the git-builders that use it" name=ci hosts="[https://git.example.com:443 https://mirror.example.org:8443]"`,
		`name=deploy hosts=[ssh://code.example.net:22]`,
		`level=WARN msg="git credential stored without hosts and used by no git-builder: bound to no hosts, unusable until an admin sets them" name=unused`,
	} {
		if strings.Count(text, want) != 1 {
			t.Errorf("the migration's log has %d lines with %q, want 1:\n%s", strings.Count(text, want), want, text)
		}
	}
	if strings.Contains(text, token) || strings.Contains(text, "PRIVATE KEY") || strings.Contains(text, "name=new") {
		t.Errorf("the migration logged a secret or a bound credential:\n%s", text)
	}
	for name, want := range map[string]string{"ci": "https://git.example.com:443,https://mirror.example.org:8443", "deploy": "ssh://code.example.net:22", "unused": "", "new": "https://new.example:443"} {
		info, err := s.Info(ctx, name)
		if err != nil || strings.Join(info.Hosts, ",") != want {
			t.Errorf("%s: hosts %q, %v; want %q", name, info.Hosts, err, want)
		}
	}
	if c, err := s.Open(ctx, "ci"); err != nil || c.Password != token {
		t.Fatalf("the secret after the migration: %v", err)
	}
	if _, _, err := s.GitClient(ctx, &git.Client{}, "unused", "https://git.example.com/a.git", t.TempDir()); err == nil || !strings.Contains(err.Error(), "names no hosts") {
		t.Errorf("a credential migrated to no hosts: %v", err)
	}

	// Idempotent: a restart migrates nothing and logs nothing.
	log, again := testenv.CapturingLogger(t)
	if names, err := s.Migrate(ctx, builders, log); err != nil || len(names) != 0 || again.String() != "" {
		t.Errorf("second migration: %q, %v, logged %q", names, err, again.String())
	}
}

func TestSealedSecretsNeedTheKeyAndThePurpose(t *testing.T) {
	t.Parallel()
	rdb, _ := redisServer.DB(t)
	s, _ := NewStore(rdb, keyFile(t, strings.Repeat("k", 40)))
	sealed, err := s.Seal("webhook/a", "hook-secret")
	if err != nil || strings.Contains(sealed, "hook-secret") {
		t.Fatalf("Seal = %q, %v", sealed, err)
	}
	if got, err := s.Unseal("webhook/a", sealed); err != nil || got != "hook-secret" {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	if _, err := s.Unseal("webhook/b", sealed); err == nil {
		t.Fatal("a secret sealed for one builder opened for another")
	}
	none, _ := NewStore(rdb, "")
	plain, _ := none.Seal("webhook/a", "x")
	if got, _ := none.Unseal("webhook/a", plain); got != "x" {
		t.Fatalf("without a key: %q", got)
	}
	if _, err := none.Unseal("webhook/a", sealed); err == nil {
		t.Fatal("opened a sealed secret without the key")
	}
}
