package credential

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
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
	if _, err := s.Create(ctx, &Credential{Name: "gh", Type: HTTPS, Username: "bot", Password: "tok-123456"}); err != nil {
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
	if len(list) != 1 || list[0].Name != "gh" || list[0].Type != HTTPS {
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
	if _, err := none.Create(ctx, &Credential{Name: "x", Type: HTTPS, Username: "a", Password: "b"}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("without a key: %v", err)
	}
}

func TestValidationAndURLMatching(t *testing.T) {
	t.Parallel()
	var ve *registry.ValidationError
	for _, c := range []Credential{
		{Name: "a", Type: SSH},
		{Name: "a", Type: SSH, PrivateKey: "-----BEGIN OPENSSH PRIVATE KEY-----", Password: "x"},
		{Name: "a", Type: HTTPS, Username: "u"},
		{Name: "a", Type: HTTPS, Username: "u", Password: "p\nq"},
		{Name: "a/b", Type: HTTPS, Username: "u", Password: "p"},
		{Name: "a", Type: "token", Password: "p"},
	} {
		if err := Validate(&c); !errors.As(err, &ve) {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
	if MatchesURL(HTTPS, "https://h/r") != nil || MatchesURL(SSH, "git@h:r.git") != nil || MatchesURL(SSH, "ssh://git@h/r") != nil {
		t.Error("matching URLs refused")
	}
	if MatchesURL(HTTPS, "ssh://h/r") == nil || MatchesURL(SSH, "https://h/r") == nil {
		t.Error("mismatched URLs accepted")
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
