package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sessions are browser sign-ins made with a token. The browser's cookie
// holds only a random 256-bit id, so the token itself never sits in a
// cookie jar, a proxy log or a browser profile. Redis, which every API
// replica shares, maps the id's SHA-256 (so Redis' content is no cookie
// either) to the token's name and hash, never the token. A session ends
// at its expiry, at sign-out, and as soon as its token leaves the tokens
// file or expires: each use looks the token up again, and takes the
// token's scope as it is now.
type Sessions struct {
	Redis  redis.UniversalClient
	Tokens *Tokens
	TTL    time.Duration // HTTP.SessionTimeout
}

// sessionKeyPrefix + hex(sha256(id)) holds a session's record.
const sessionKeyPrefix = "pkgfleet:session:"

// sessionRecord is what Redis holds for a session.
type sessionRecord struct {
	Name   string `json:"name"`   // the token's name
	SHA256 string `json:"sha256"` // the token's hash, as in the tokens file
}

// sessionIDLen is the length of an id: 32 bytes in unpadded base64url.
var sessionIDLen = base64.RawURLEncoding.EncodedLen(32)

func sessionKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return sessionKeyPrefix + hex.EncodeToString(h[:])
}

// Create starts a session for tok and returns its id and when it ends:
// after TTL, or when the token expires if that is sooner.
func (s *Sessions) Create(ctx context.Context, tok Token) (id string, expires time.Time, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("session id: %w", err)
	}
	id = base64.RawURLEncoding.EncodeToString(b[:])
	expires = s.Tokens.now().Add(s.TTL)
	if !tok.Expires.IsZero() && tok.Expires.Before(expires) {
		expires = tok.Expires
	}
	rec, err := json.Marshal(sessionRecord{Name: tok.Name, SHA256: hex.EncodeToString(tok.hash[:])})
	if err != nil {
		return "", time.Time{}, err
	}
	if err := s.Redis.Set(ctx, sessionKey(id), rec, expires.Sub(s.Tokens.now())).Err(); err != nil {
		return "", time.Time{}, fmt.Errorf("store session of token %q: %w", tok.Name, err)
	}
	return id, expires, nil
}

// Get returns the token of session id, if the session and the token are
// both still valid. A session whose token is gone is deleted.
func (s *Sessions) Get(ctx context.Context, id string) (Token, bool, error) {
	if len(id) != sessionIDLen {
		return Token{}, false, nil // not an id this server made (an old cookie, say)
	}
	key := sessionKey(id)
	raw, err := s.Redis.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return Token{}, false, nil
	}
	if err != nil {
		return Token{}, false, fmt.Errorf("read session: %w", err)
	}
	var rec sessionRecord
	var h [32]byte
	if err := json.Unmarshal(raw, &rec); err != nil || len(rec.SHA256) != hex.EncodedLen(len(h)) {
		return Token{}, false, fmt.Errorf("session record %s is malformed", key)
	}
	if _, err := hex.Decode(h[:], []byte(rec.SHA256)); err != nil {
		return Token{}, false, fmt.Errorf("session record %s is malformed", key)
	}
	tok, ok := s.Tokens.find(h)
	if !ok || tok.Name != rec.Name {
		if err := s.Redis.Del(ctx, key).Err(); err != nil {
			return Token{}, false, fmt.Errorf("delete session of a revoked token: %w", err)
		}
		return Token{}, false, nil
	}
	return tok, true, nil
}

// Delete ends session id (sign-out).
func (s *Sessions) Delete(ctx context.Context, id string) error {
	if err := s.Redis.Del(ctx, sessionKey(id)).Err(); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}
