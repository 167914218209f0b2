package api

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/door"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// signIn signs in with token as a browser does and returns the session
// cookie's value; a token the API refuses gives itself, an unknown
// session.
func (h *harness) signIn(token string) string {
	h.t.Helper()
	if id, ok := h.sessions[token]; ok {
		return id
	}
	_, _, resp := h.page("POST", "/login", "", url.Values{"token": {token}, "next": {"/"}})
	id := token
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			id = c.Value
		}
	}
	if h.sessions == nil {
		h.sessions = map[string]string{}
	}
	h.sessions[token] = id
	return id
}

// page fetches path as a browser signed in with token would (""
// for none), and returns the status and the body as text.
func (h *harness) page(method, path, token string, form url.Values) (int, string, *http.Response) {
	h.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, h.url+path, body)
	req.Header.Set("Accept", "text/html")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if token != "" {
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: h.signIn(token)})
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, html.UnescapeString(string(b)), resp
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func TestBuildsPageFollowsTokenScopes(t *testing.T) {
	t.Parallel()
	h := setup(t, true)
	if code, body := h.req("POST", "/api/v1/sources", `{"name":"r-src","type":"git"}`, h.tok["write"]); code != 201 {
		t.Fatalf("create source: %d %s", code, body)
	}
	ctx := context.Background()
	reg := registry.New(h.rdb)
	if err := reg.CreateBuilder(ctx, &registry.Builder{Source: "r-src", Name: "pkg", Language: "r",
		URL: "https://git.invalid/pkg.git", BuildTrigger: registry.TriggerCommits, CloneDepth: 1, Check: true, CheckGates: true}); err != nil {
		t.Fatal(err)
	}
	b, _, err := reg.CreateBuild(ctx, &registry.Build{Source: "r-src", Builder: "pkg", Language: "r",
		Ref: "main", SHA: strings.Repeat("a", 40), Trigger: "manual", MaxAttempts: 2}, registry.ReuseActive)
	if err != nil {
		t.Fatal(err)
	}
	b, err = reg.UpdateBuild(ctx, b.ID, func(b *registry.Build) error {
		b.Status, b.Attempts = registry.StatusFailed, 2
		b.Detail = "R CMD build failed: no DESCRIPTION\nmore lines"
		b.Phases = []registry.Phase{{Phase: "queued", MS: 12.5}, {Phase: "clone", MS: 800}}
		b.Fetched = []door.Fetched{{Name: "setuptools", Version: "68.1.2", File: "setuptools-68.1.2-py3-none-any.whl", SHA256: strings.Repeat("b", 64),
			Environments: []string{"sdist", "wheel"}}}
		b.Describe = "v1.1.0-55-g0123abc"
		b.Warnings = []string{"DESCRIPTION: line 3: Version repeated (first at line 2); R's read.dcf keeps the last"}
		b.Check = &registry.Check{Verdict: registry.CheckWarning, Warnings: 1, Notes: 2, Gated: true,
			Summary: "R CMD check: 1 WARNING, 2 NOTEs; checking for missing documentation entries ... WARNING"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	buildPath := "/builds/" + itoa(b.ID)

	// No credential: the sign-in form, not the page.
	code, body, _ := h.page("GET", "/", "", nil)
	if code != 401 || !strings.Contains(body, `name="token"`) {
		t.Errorf("no token: %d, want 401 with the sign-in form; body %.300s", code, body)
	}
	// An unknown session: the form again, saying why.
	code, body, _ = h.page("GET", "/", "pkf_wrong", nil)
	if code != 401 || !strings.Contains(body, "sign-in has ended") {
		t.Errorf("bad cookie: %d, want 401 saying the sign-in has ended", code)
	}
	code, body, _ = h.page("POST", "/login", "", url.Values{"token": {"pkf_wrong"}, "next": {"/"}})
	if code != 401 || !strings.Contains(body, "not valid") {
		t.Errorf("bad sign-in: %d, want 401 saying the token is not valid", code)
	}
	// Signing in sets an HttpOnly cookie (a session id, not the token) and
	// goes back where the visitor was.
	code, _, resp := h.page("POST", "/login", "", url.Values{"token": {h.tok["read"]}, "next": {buildPath}})
	if code != http.StatusSeeOther || resp.Header.Get("Location") != buildPath {
		t.Errorf("sign-in: %d to %q, want 303 to %s", code, resp.Header.Get("Location"), buildPath)
	}
	var set *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			set = c
		}
	}
	if set == nil || !set.HttpOnly || set.SameSite != http.SameSiteLaxMode || set.Value == "" || strings.Contains(set.Value, h.tok["read"]) {
		t.Errorf("sign-in cookie: %+v", set)
	}
	// An open redirect is not possible.
	_, _, resp = h.page("POST", "/login", "", url.Values{"token": {h.tok["read"]}, "next": {"//evil.example/"}})
	if loc := resp.Header.Get("Location"); loc != "/" {
		t.Errorf("sign-in with next=//evil.example/ redirects to %q, want /", loc)
	}

	// A read token sees the builds, the reason and the phases, and no buttons.
	code, body, _ = h.page("GET", "/", h.tok["read"], nil)
	for _, want := range []string{"r-src", "#" + itoa(b.ID), "R CMD build failed: no DESCRIPTION", "clone 800ms", `repos = "http://`, "1 metadata warning<",
		`class="check check-WARNING"`, "WARNING 1W 2N · gated", "check, gates publishing"} {
		if !strings.Contains(body, want) {
			t.Errorf("index with a read token lacks %q", want)
		}
	}
	if code != 200 || strings.Contains(body, "more lines") || strings.Contains(body, ">rerun<") {
		t.Errorf("index with a read token: %d; must show only the reason's first line and no buttons", code)
	}
	for _, tok := range h.tok {
		if strings.Contains(body, tok) {
			t.Fatal("the page shows a token")
		}
	}
	// The build's own page shows its phases too.
	if code, body, _ = h.page("GET", buildPath, h.tok["read"], nil); code != 200 || !strings.Contains(body, "queued 12ms · clone 800ms") ||
		!strings.Contains(body, "setuptools 68.1.2") || !strings.Contains(body, "for the sdist and wheel") ||
		!strings.Contains(body, "git describe: v1.1.0-55-g0123abc") || !strings.Contains(body, "line 3: Version repeated (first at line 2)") ||
		!strings.Contains(body, "checking for missing documentation entries ... WARNING") {
		t.Errorf("build page: %d, want its phases, what came through the door for which environment, its git describe, its warnings and its check", code)
	}
	// The poller's last error shows under its builder.
	pctx, stopPoller := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() { defer close(polled); _ = h.srv.Poller().Run(pctx) }()
	testenv.Eventually(t, time.Minute, "the poll error on the page", func() bool {
		_, body, _ := h.page("GET", "/", h.tok["read"], nil)
		return strings.Contains(body, "last poll failed:") && strings.Contains(body, "git.invalid")
	})
	stopPoller()
	<-polled
	// Basic auth works as well as the cookie.
	req, _ := http.NewRequest("GET", h.url+buildPath, nil)
	req.SetBasicAuth("x", h.tok["read"])
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("build page with basic auth: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	// A read token may not act; a write token must send the form's value.
	if code, body, _ = h.page("POST", buildPath+"/rerun", h.tok["read"], url.Values{}); code != 403 || !strings.Contains(body, "needs a write token") {
		t.Errorf("rerun with a read token: %d, want 403", code)
	}
	code, body, _ = h.page("GET", "/", h.tok["write"], nil)
	m := csrfRE.FindStringSubmatch(body)
	if code != 200 || m == nil || !strings.Contains(body, ">rerun<") {
		t.Fatalf("index with a write token: %d, want a rerun button with a csrf value", code)
	}
	if code, _, _ = h.page("POST", buildPath+"/cancel", h.tok["write"], url.Values{"csrf": {"0123"}}); code != 403 {
		t.Errorf("cancel with a wrong csrf value: %d, want 403", code)
	}
	// The same value from another site is refused too.
	req, _ = http.NewRequest("POST", h.url+buildPath+"/cancel", strings.NewReader(url.Values{"csrf": {m[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: h.signIn(h.tok["write"])})
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("cross-site cancel: %v %v, want 403", err, resp)
	} else {
		resp.Body.Close()
	}
	// A build that already failed cannot be canceled: a page says so.
	if code, body, _ = h.page("POST", buildPath+"/cancel", h.tok["write"], url.Values{"csrf": {m[1]}}); code != 409 || !strings.Contains(body, "already failed") {
		t.Errorf("cancel a failed build: %d, want 409 saying so", code)
	}

	// Unknown ids and paths get a page, not JSON or a trace.
	for path, want := range map[string]int{"/builds/999999": 404, "/builds/abc": 400, "/no/such/page": 404, buildPath + "/artifacts/nope.tar.gz": 404} {
		code, body, resp := h.page("GET", path, h.tok["read"], nil)
		if code != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, `id="problem"`) {
			t.Errorf("GET %s: %d %s, want %d with an error page", path, code, resp.Header.Get("Content-Type"), want)
		}
	}
	// The page's assets come from the API itself.
	for _, asset := range []string{"/assets/page.css", "/assets/page.js"} {
		if code, _, _ := h.page("GET", asset, "", nil); code != 200 {
			t.Errorf("GET %s: %d", asset, code)
		}
	}
}

func TestBuildsPageWithoutTokensNeedsNoSignIn(t *testing.T) {
	t.Parallel()
	h := setup(t, false)
	code, body, _ := h.page("GET", "/", "", nil)
	if code != 200 || !strings.Contains(body, "no tokens (loopback only)") || !strings.Contains(body, "No worker is running") {
		t.Errorf("index without tokens: %d %.400s", code, body)
	}
	// Forms still need the page's own value.
	if code, _, _ := h.page("POST", "/builds/1/rerun", "", url.Values{}); code != 403 {
		t.Errorf("rerun without the csrf value: %d, want 403", code)
	}
}

func TestHumanDurations(t *testing.T) {
	for d, want := range map[time.Duration]string{
		340 * time.Millisecond: "340ms", 4200 * time.Millisecond: "4.2s",
		192 * time.Second: "3m12s", 62 * time.Minute: "1h02m",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
