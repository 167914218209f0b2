package auth

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clock is a fake time that the test moves on, so that each Check looks
// at the file again without the test waiting for it.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }
func (c *clock) tick()          { c.t = c.t.Add(reloadEvery) }

// writeAtomic replaces the file as a Kubernetes Secret update or an
// editor does: a new file renamed into place.
func writeAtomic(t *testing.T, path string, lines ...string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newToken(t *testing.T, name string, scope Scope) (token, line string) {
	t.Helper()
	token, line, err := New(name, scope, "")
	if err != nil {
		t.Fatal(err)
	}
	return token, line
}

// TestWatchedTokensFollowTheFile: a token added to the file is accepted
// and one removed is refused without a restart; a new version that does
// not parse keeps the tokens from before and logs one error, without the
// token.
func TestWatchedTokensFollowTheFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tokens")
	oldTok, oldLine := newToken(t, "old", Read)
	newTok, newLine := newToken(t, "new", Write)
	writeAtomic(t, path, oldLine)
	var logs bytes.Buffer
	tokens, err := Watch(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	tokens.now = c.now
	check := func(secret string) bool { _, ok := tokens.Check(secret); return ok }
	if !check(oldTok) || check(newTok) {
		t.Fatal("the first version: want old accepted, new refused")
	}

	// Added in place (the same inode, a new size and time).
	if err := os.WriteFile(path, []byte(oldLine+"\n"+newLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.tick()
	if tok, ok := tokens.Check(newTok); !ok || tok.Name != "new" || tok.Scope != Write {
		t.Errorf("a token added to the file: %+v %v, want it accepted as new/write", tok, ok)
	}
	// Removed by a new file renamed into place.
	writeAtomic(t, path, newLine)
	c.tick()
	if check(oldTok) {
		t.Error("a token removed from the file is still accepted")
	}
	if !check(newTok) {
		t.Error("the token left in the file is refused")
	}
	// A broken version keeps what was loaded, and says so once.
	writeAtomic(t, path, oldLine, "oops write "+oldTok)
	for range 3 {
		c.tick()
		if !check(newTok) || check(oldTok) {
			t.Fatal("a malformed file changed the tokens; want the ones loaded before")
		}
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d errors logged for one malformed version, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), oldTok) {
		t.Error("the log shows a token")
	}
	// Mended, it is read again.
	writeAtomic(t, path, oldLine)
	c.tick()
	if !check(oldTok) || check(newTok) {
		t.Error("the mended file: want old accepted, new refused")
	}
	// Without a tick (within a second) the file is not looked at.
	writeAtomic(t, path, newLine)
	if !check(oldTok) {
		t.Error("the file was read again within a second of the last look")
	}
}

// TestLoadedTokensAreReadOnce: Load reads the file once (to check a file,
// as the chart's tests do), whatever happens to it after.
func TestLoadedTokensAreReadOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tokens")
	tok, line := newToken(t, "a", Admin)
	writeAtomic(t, path, line)
	tokens, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	tokens.now = c.now
	writeAtomic(t, path, "# empty")
	c.tick()
	if _, ok := tokens.Check(tok); !ok {
		t.Error("Load's tokens changed with the file")
	}
}
