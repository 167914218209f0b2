// Package auth reads API tokens and checks them, and keeps the browser
// sign-ins made with them. A tokens file (HTTP.TokensFile) holds one token
// per line, stored only as a SHA-256 hash, with its scope and an optional
// expiry:
//
//	# name      scope  hash                                                               expires (optional)
//	ci-bot      write  sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  2027-06-01
//
// Scopes nest: admin can do what write can, write what read can. Tokens
// never appear in logs or errors; only their names do. The API watches the
// file (Watch): adding a line admits a token, removing it revokes the
// token, without a restart. A browser signs in with a token and then
// holds a session (Sessions), never the token.
package auth

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Scope is what a token may do.
type Scope int

// Scopes, weakest first.
const (
	None Scope = iota
	Read
	Write
	Admin
)

func (s Scope) String() string {
	switch s {
	case Read:
		return "read"
	case Write:
		return "write"
	case Admin:
		return "admin"
	}
	return "none"
}

// ParseScope reads "read", "write" or "admin".
func ParseScope(s string) (Scope, error) {
	switch s {
	case "read":
		return Read, nil
	case "write":
		return Write, nil
	case "admin":
		return Admin, nil
	}
	return None, fmt.Errorf("scope %q is not read, write or admin", s)
}

// Token is one line of the tokens file.
type Token struct {
	Name    string
	Scope   Scope
	hash    [32]byte
	Expires time.Time // zero = never
}

// Tokens is a loaded tokens file. One from Watch follows the file: a
// token added there is accepted, and one removed is refused, within
// about a second and without a restart.
type Tokens struct {
	now  func() time.Time
	path string       // "" for Load's: read once
	log  *slog.Logger // Watch's: where a bad new version is reported

	mu      sync.Mutex
	list    []Token
	version os.FileInfo // of the file list was read from; nil when it could not be
	checked time.Time   // the last look at the file
}

// reloadEvery bounds how often Watch's Tokens look at their file: one
// stat a second at most, however many requests arrive.
const reloadEvery = time.Second

// Load reads a tokens file once.
func Load(path string) (*Tokens, error) {
	list, _, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return &Tokens{list: list, now: time.Now}, nil
}

// Watch reads a tokens file like Load, and reads it again when it changes
// (its modification time, size or inode: an edit, or the new file a
// Kubernetes Secret update or an editor renames into place). A new
// version that cannot be read keeps the tokens loaded before and logs one
// error, naming the line but never a token.
func Watch(path string, log *slog.Logger) (*Tokens, error) {
	list, fi, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return &Tokens{list: list, version: fi, now: time.Now, path: path, log: log}, nil
}

// tokens returns the current list, first reading the file again if it
// changed since it was last read.
func (t *Tokens) tokens() []Token {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if t.path == "" || now.Sub(t.checked) < reloadEvery {
		return t.list
	}
	t.checked = now
	fi, err := os.Stat(t.path)
	if err != nil {
		if t.version != nil { // once, when it goes
			t.log.Error("tokens file is gone; keeping the tokens loaded before", "error", err)
		}
		t.version = nil
		return t.list
	}
	if t.version != nil && fi.ModTime().Equal(t.version.ModTime()) && fi.Size() == t.version.Size() && os.SameFile(fi, t.version) {
		return t.list
	}
	t.version = fi // a bad version is reported once, not at every look
	list, _, err := readFile(t.path)
	if err != nil {
		t.log.Error("tokens file changed but cannot be read; keeping the tokens loaded before", "error", err)
		return t.list
	}
	t.list = list
	t.log.Info("tokens file read again", "path", t.path, "tokens", len(list))
	return t.list
}

// readFile parses a tokens file, and says which version of it it read.
func readFile(path string) ([]Token, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("tokens file: %w", err)
	}
	var list []Token
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		tok, err := parseLine(line)
		if err != nil {
			return nil, nil, fmt.Errorf("tokens file %s:%d: %w", path, n, err)
		}
		list = append(list, tok)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("tokens file: %w", err)
	}
	return list, fi, nil
}

func parseLine(line string) (Token, error) {
	fields := strings.Fields(line)
	if len(fields) < 3 || len(fields) > 4 {
		return Token{}, errors.New(`expected "name scope sha256:HEX [expires]"`)
	}
	scope, err := ParseScope(fields[1])
	if err != nil {
		return Token{}, err
	}
	hexHash, ok := strings.CutPrefix(fields[2], "sha256:")
	raw, err := hex.DecodeString(hexHash)
	if !ok || err != nil || len(raw) != 32 {
		return Token{}, errors.New("the hash must be sha256: and 64 hex digits (the token itself never goes in this file)")
	}
	tok := Token{Name: fields[0], Scope: scope}
	copy(tok.hash[:], raw)
	if len(fields) == 4 {
		exp, err := parseExpiry(fields[3])
		if err != nil {
			return Token{}, err
		}
		tok.Expires = exp
	}
	return tok, nil
}

func parseExpiry(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t.Add(24 * time.Hour), nil // valid through that day (UTC)
	}
	return time.Time{}, fmt.Errorf("expiry %q is not a date (2027-06-01) or RFC 3339 time", s)
}

// Check returns the token matching secret, if any and unexpired.
func (t *Tokens) Check(secret string) (Token, bool) {
	if secret == "" {
		return Token{}, false
	}
	h := sha256.Sum256([]byte(secret))
	return t.find(h)
}

// find returns the current, unexpired token whose hash is h.
func (t *Tokens) find(h [32]byte) (Token, bool) {
	for _, tok := range t.tokens() {
		if subtle.ConstantTimeCompare(h[:], tok.hash[:]) == 1 {
			if !tok.Expires.IsZero() && t.now().After(tok.Expires) {
				return Token{}, false
			}
			return tok, true
		}
	}
	return Token{}, false
}

// Len is the number of tokens.
func (t *Tokens) Len() int { return len(t.tokens()) }

// New makes a random token and the tokens-file line that admits it.
func New(name string, scope Scope, expires string) (token, line string, err error) {
	if name == "" || strings.ContainsAny(name, " \t#\n") {
		return "", "", errors.New("token name must be one word")
	}
	if expires != "" {
		if _, err := parseExpiry(expires); err != nil {
			return "", "", err
		}
	}
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	token = "pkf_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	h := sha256.Sum256([]byte(token))
	line = fmt.Sprintf("%s %s sha256:%s", name, scope, hex.EncodeToString(h[:]))
	if expires != "" {
		line += " " + expires
	}
	return token, line, nil
}
