// Package credential keeps the Git credentials of private repositories:
// ssh keys (with an optional passphrase) and https usernames with tokens.
// They are stored in Redis sealed with AES-256-GCM under a key read from a
// secret file (Git.CredentialKeyFile), referenced by name from builders,
// and handed out only to the git client that clones. Listings carry names,
// types and hosts, never secrets.
//
// A credential is bound to the hosts it may be sent to (hosts.go): a
// builder may use it only for a URL they match, and git's credential
// helper and ssh command hand it to no other server, redirects and
// submodules included.
package credential

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/redis/go-redis/v9"
)

// Types of a credential (see apiv1).
const (
	SSH   = apiv1.CredentialSSH
	HTTPS = apiv1.CredentialHTTPS
)

const key = "pkgfleet:credentials" // hash name → sealed record

// Credential is a whole credential, secrets included.
type Credential struct {
	Name       string
	Type       string
	Hosts      []string // where it may be sent (see apiv1.CredentialInfo)
	Username   string   // https
	Password   string   // https: the token or password
	PrivateKey string   // ssh: PEM/OpenSSH private key
	Passphrase string   // ssh: optional
	KnownHosts string   // ssh: known_hosts lines; else Store.SSHKnownHostsFile
}

// Info is what may be shown about a credential.
type Info = apiv1.CredentialInfo

// record is a credential as stored. Its Hosts are nil (no "hosts" key)
// only in a record stored before credentials had hosts, until Migrate
// binds it; bound to none is [].
type record struct {
	Info
	Sealed []byte `json:"sealed"` // nonce | AES-GCM(secrets), bound to name and type
}

type secrets struct {
	Username   string `json:"u,omitempty"`
	Password   string `json:"p,omitempty"`
	PrivateKey string `json:"k,omitempty"`
	Passphrase string `json:"pp,omitempty"`
}

// Store seals and opens credentials.
type Store struct {
	rdb  redis.UniversalClient
	aead cipher.AEAD // nil: no key configured
	// SSHKnownHostsFile (Git.SSHKnownHostsFile) holds the host keys of ssh
	// servers for ssh credentials that carry no known_hosts of their own.
	SSHKnownHostsFile string
}

// ErrNoKey is returned when Git.CredentialKeyFile is not set.
var ErrNoKey = errors.New("git credentials need Git.CredentialKeyFile: a secret file of at least 32 random bytes (e.g. head -c 48 /dev/urandom | base64 > /etc/pkgfleet/credential.key)")

// ErrUndecryptable is returned when a sealed value does not open with the
// configured key.
var ErrUndecryptable = errors.New("cannot be decrypted: was Git.CredentialKeyFile changed?")

// FromConfig returns the store that the [Git] settings describe, as the
// API and the workers both open it.
func FromConfig(rdb redis.UniversalClient, cfg config.Git) (*Store, error) {
	s, err := NewStore(rdb, cfg.CredentialKeyFile)
	if err != nil {
		return nil, err
	}
	s.SSHKnownHostsFile = cfg.SSHKnownHostsFile
	return s, nil
}

// NewStore returns a store; keyFile "" means credentials cannot be used.
func NewStore(rdb redis.UniversalClient, keyFile string) (*Store, error) {
	s := &Store{rdb: rdb}
	if keyFile == "" {
		return s, nil
	}
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("Git.CredentialKeyFile: %w", err)
	}
	material := strings.TrimSpace(string(data))
	if len(material) < 32 {
		return nil, fmt.Errorf("Git.CredentialKeyFile %s holds %d bytes; it needs at least 32", keyFile, len(material))
	}
	k := sha256.Sum256([]byte("pkgfleet credential key v1\x00" + material))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	s.aead, err = cipher.NewGCM(block)
	return s, err
}

// Validate checks a credential before it is stored, and writes its hosts
// in their canonical form.
func (s *Store) Validate(c *Credential) error {
	if err := registry.ValidateName("credential name", c.Name); err != nil {
		return err
	}
	bad := func(msg string) error { return &registry.ValidationError{Msg: msg} }
	switch c.Type {
	case SSH:
		if !strings.Contains(c.PrivateKey, "PRIVATE KEY-----") {
			return bad("an ssh credential needs private_key: a PEM or OpenSSH private key")
		}
		if c.Username != "" || c.Password != "" {
			return bad("an ssh credential takes private_key and passphrase, not username or password")
		}
		if err := s.checkKnownHosts(c.KnownHosts); err != nil {
			return err
		}
	case HTTPS:
		if c.Username == "" || c.Password == "" {
			return bad("an https credential needs username and password (or token)")
		}
		if strings.ContainsAny(c.Username+c.Password, "\n\r\x00") {
			return bad("username and password must be one line")
		}
		if c.PrivateKey != "" || c.Passphrase != "" || c.KnownHosts != "" {
			return bad("an https credential takes username and password, not a private key or known_hosts")
		}
	default:
		return bad(fmt.Sprintf("credential type must be %q or %q", SSH, HTTPS))
	}
	hosts, err := CanonicalHosts(c.Type, c.Hosts)
	if err != nil {
		return err
	}
	c.Hosts = hosts
	return nil
}

func aad(name, typ string) []byte { return []byte("pkgfleet-credential\x00" + name + "\x00" + typ) }

// Create stores a new credential.
func (s *Store) Create(ctx context.Context, c *Credential) (Info, error) {
	if s.aead == nil {
		return Info{}, ErrNoKey
	}
	if err := s.Validate(c); err != nil {
		return Info{}, err
	}
	plain, _ := json.Marshal(secrets{Username: c.Username, Password: c.Password, PrivateKey: c.PrivateKey, Passphrase: c.Passphrase})
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return Info{}, err
	}
	rec := record{Info: Info{Name: c.Name, Type: c.Type, Hosts: c.Hosts, KnownHosts: c.KnownHosts,
		CreatedAt: time.Now().UTC().Truncate(time.Second)}}
	rec.Sealed = s.aead.Seal(nonce, nonce, plain, aad(c.Name, c.Type))
	data, _ := json.Marshal(rec)
	ok, err := s.rdb.HSetNX(ctx, key, c.Name, data).Result()
	if err != nil {
		return Info{}, fmt.Errorf("store credential: %w", err)
	}
	if !ok {
		return Info{}, fmt.Errorf("credential %q %w", c.Name, registry.ErrExists)
	}
	return rec.Info, nil
}

// List returns every credential's name and type.
func (s *Store) List(ctx context.Context) ([]Info, error) {
	vals, err := s.rdb.HVals(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	out := []Info{}
	for _, v := range vals {
		var r record
		if err := json.Unmarshal([]byte(v), &r); err != nil {
			return nil, err
		}
		out = append(out, r.shown())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Info returns what may be shown about one credential.
func (s *Store) Info(ctx context.Context, name string) (Info, error) {
	r, err := s.record(ctx, name)
	return r.shown(), err
}

// shown is the record's Info as the API shows it: a credential stored
// before hosts existed (nil until migrated) has none.
func (r record) shown() Info {
	i := r.Info
	if i.Hosts == nil {
		i.Hosts = []string{}
	}
	return i
}

func (s *Store) record(ctx context.Context, name string) (record, error) {
	r, _, err := s.recordRaw(ctx, name)
	return r, err
}

// recordRaw also returns the stored value, for a compare-and-set.
func (s *Store) recordRaw(ctx context.Context, name string) (record, string, error) {
	var r record
	raw, err := s.rdb.HGet(ctx, key, name).Result()
	if errors.Is(err, redis.Nil) {
		return r, "", fmt.Errorf("credential %q %w", name, registry.ErrNotFound)
	}
	if err != nil {
		return r, "", fmt.Errorf("credential %q: %w", name, err)
	}
	return r, raw, json.Unmarshal([]byte(raw), &r)
}

// Open returns the whole credential, for the git client only.
func (s *Store) Open(ctx context.Context, name string) (*Credential, error) {
	if s.aead == nil {
		return nil, ErrNoKey
	}
	r, err := s.record(ctx, name)
	if err != nil {
		return nil, err
	}
	n := s.aead.NonceSize()
	if len(r.Sealed) < n {
		return nil, fmt.Errorf("credential %q is corrupt", name)
	}
	plain, err := s.aead.Open(nil, r.Sealed[:n], r.Sealed[n:], aad(r.Name, r.Type))
	if err != nil {
		return nil, fmt.Errorf("credential %q %w", name, ErrUndecryptable)
	}
	var sec secrets
	if err := json.Unmarshal(plain, &sec); err != nil {
		return nil, err
	}
	return &Credential{Name: r.Name, Type: r.Type, Hosts: r.shown().Hosts, Username: sec.Username, Password: sec.Password,
		PrivateKey: sec.PrivateKey, Passphrase: sec.Passphrase, KnownHosts: r.KnownHosts}, nil
}

// Delete removes a credential.
func (s *Store) Delete(ctx context.Context, name string) error {
	n, err := s.rdb.HDel(ctx, key, name).Result()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("credential %q %w", name, registry.ErrNotFound)
	}
	return nil
}

// GitClient returns base authenticated with the named credential ("" =
// none) for repoURL, and a cleanup to call when the git work is done. It
// refuses a URL the credential's hosts do not match, whatever a builder
// record says: hosts may have been narrowed since the builder was saved.
func (s *Store) GitClient(ctx context.Context, base *git.Client, name, repoURL, tempDir string) (*git.Client, func(), error) {
	if name == "" {
		return base, func() {}, nil
	}
	c, err := s.Open(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	info := Info{Name: c.Name, Type: c.Type, Hosts: c.Hosts}
	if err := CheckURL(info, repoURL); err != nil {
		return nil, nil, err
	}
	patterns, err := parseHosts(c.Type, c.Hosts)
	if err != nil {
		return nil, nil, fmt.Errorf("credential %q: %w", name, err)
	}
	return base.WithAuth(&git.Auth{Hosts: patterns, Username: c.Username, Password: c.Password,
		PrivateKey: c.PrivateKey, Passphrase: c.Passphrase, KnownHosts: c.KnownHosts, KnownHostsFile: s.SSHKnownHostsFile}, tempDir)
}

// Seal prepares a small secret (a webhook secret) for storage: encrypted
// and bound to purpose when a key is configured, as is otherwise.
func (s *Store) Seal(purpose, secret string) (string, error) {
	if secret == "" {
		return "", nil
	}
	if s.aead == nil {
		return "plain:" + secret, nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return "v1:" + base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(secret), []byte(purpose))), nil
}

// Unseal returns what Seal stored.
func (s *Store) Unseal(purpose, stored string) (string, error) {
	if plain, ok := strings.CutPrefix(stored, "plain:"); ok {
		return plain, nil
	}
	sealed, ok := strings.CutPrefix(stored, "v1:")
	if !ok {
		return stored, nil // stored before secrets were sealed
	}
	if s.aead == nil {
		return "", ErrNoKey
	}
	raw, err := base64.StdEncoding.DecodeString(sealed)
	n := s.aead.NonceSize()
	if err != nil || len(raw) < n {
		return "", errors.New("sealed secret is corrupt")
	}
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(purpose))
	if err != nil {
		return "", fmt.Errorf("sealed secret %w", ErrUndecryptable)
	}
	return string(plain), nil
}
