package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/pkgfleet/pkgfleet/internal/auth"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// tickerSetupPy is a Python package whose build prints a numbered line
// every 0.2s for two minutes: a build whose log grows while a person
// watches it, and which the test ends with the page's cancel button.
var tickerSetupPy = map[string]string{
	"setup.py": `import time
for i in range(600):
    print("tick %d" % i, flush=True)
    time.sleep(0.2)
from setuptools import setup
setup(name="ticker", version="0.1.0", py_modules=["ticker"])
`,
	"ticker.py": "def hello():\n    return 'hello'\n",
}

// browser starts headless Chromium for one test and returns its context.
func browser(t *testing.T) context.Context {
	t.Helper()
	testenv.Require(t, "chromium")
	path, _ := exec.LookPath("chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // the tests run as root; the page is ours
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	ctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// screenshot saves the page as a PNG test artifact (quality 100 is PNG).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(testenv.ArtifactDir(t), name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// until waits for a JavaScript expression to be true on the page, across
// the page's own reloads (which end a poll inside the page).
func until(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	testenv.Eventually(t, 4*time.Minute, what, func() bool {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if ctx.Err() != nil {
			t.Fatalf("%s: %v", what, ctx.Err())
		}
		return err == nil && ok
	})
}

// text returns the visible text of the first element matching the CSS
// selector sel. It is read in one step in the page: the page's live
// updates replace elements, so a node found in one call may be gone in
// the next.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	var s string
	testenv.Eventually(t, 30*time.Second, "an element "+sel, func() bool {
		var err error
		s, err = chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(
			`(() => { const e = document.querySelector(%q); return e ? e.innerText : "\x00" })()`, sel)))
		if ctx.Err() != nil {
			t.Fatalf("text of %s: %v", sel, ctx.Err())
		}
		return err == nil && s != "\x00"
	})
	return s
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// statusIs is true when the build page shows status s.
func statusIs(s string) string {
	return fmt.Sprintf(`(document.getElementById("status") || {}).textContent === %q`, s)
}

// TestBuildsPageInChromium signs in to the builds page in headless
// Chromium against a real API, worker and Redis, runs two real builds with
// the page's buttons, follows one's log as it grows, cancels it, downloads
// the other's artifacts, and checks what a read-only visitor sees.
func TestBuildsPageInChromium(t *testing.T) {
	t.Parallel()
	tokens := map[auth.Scope]string{}
	var lines []string
	for _, sc := range []auth.Scope{auth.Read, auth.Write} {
		tok, line, err := auth.New("web-"+sc.String(), sc, "")
		if err != nil {
			t.Fatal(err)
		}
		tokens[sc], lines = tok, append(lines, line)
	}
	tokensFile := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokensFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := setup(t, map[string]string{"PKGFLEET_HTTP_TOKENSFILE": tokensFile, "PKGFLEET_GIT_BUILDNETWORK": "false"})
	ctx := context.Background()
	if _, err := f.reg.CreateSource(ctx, registry.Source{Name: "py-web", Type: registry.TypeGitPython}); err != nil {
		t.Fatal(err)
	}
	normal := versionedRepo(t, "python/hellofleet-py", "pyproject.toml", "src/hellofleet_py/__init__.py")
	ticker := versionedRepoFrom(t, tickerSetupPy)
	for name, repo := range map[string]string{"hellofleet-py": normal, "ticker": ticker} {
		if err := f.reg.CreateBuilder(ctx, &registry.Builder{Source: "py-web", Name: name, Language: registry.LangPython,
			URL: "file://" + repo, Branch: "main", BuildTrigger: registry.TriggerCommits, CloneDepth: 1}); err != nil {
			t.Fatal(err)
		}
	}
	b := browser(t)
	base := f.api.URL
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// A visitor without a token gets the sign-in form; a wrong token is refused.
	do(t, b, "open the page", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), "pkf_not_a_token"), chromedp.Click(css("#signin")),
		chromedp.WaitVisible(css("#problem")))
	if got := text(t, b, "#problem"); !strings.Contains(got, "not valid") {
		t.Errorf("wrong token: the page says %q", got)
	}
	do(t, b, "sign in with the write token", chromedp.SendKeys(css("#token"), tokens[auth.Write]),
		chromedp.Click(css("#signin")), chromedp.WaitVisible(css("#builder-py-web-ticker")))
	// The browser keeps a session id, HttpOnly, and never the token.
	jar, err := chromedp.Call(b, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	if err != nil || len(jar.Cookies) != 1 {
		t.Fatalf("the browser's cookies after sign-in: %v %v, want one", jar, err)
	}
	if c := jar.Cookies[0]; c.Name != "pkgfleet_session" || !c.HTTPOnly || strings.Contains(c.Value, tokens[auth.Write]) {
		t.Errorf("the browser's cookie after sign-in: %s HttpOnly=%v, want pkgfleet_session, HttpOnly, without the token", c.Name, c.HTTPOnly)
	}

	// Run the example with its builder's button; the build page shows it
	// finish by itself (it reloads when the log says the build ended).
	do(t, b, "run hellofleet-py", chromedp.Click(css("#builder-py-web-hellofleet-py button.run")),
		chromedp.WaitVisible(css("#log")))
	until(t, b, "the example's build page to say succeeded", statusIs("succeeded")+` && !!document.querySelector("#artifacts a")`)
	artifacts := text(t, b, "#artifacts")
	for _, want := range []string{".whl", ".tar.gz"} {
		if !strings.Contains(artifacts, want) {
			t.Errorf("artifacts %q lack a %s", artifacts, want)
		}
	}
	// The artifact link downloads the file with the browser's cookie.
	size, err := chromedp.Run(b, chromedp.Evaluate[float64](`(async () => {
		const a = [...document.querySelectorAll("#artifacts a")].find(a => a.href.endsWith(".whl"));
		const r = await fetch(a.href, {credentials: "same-origin"});
		if (!r.ok) return -r.status;
		return (await r.arrayBuffer()).byteLength;
	})()`, chromedp.EvalAwaitPromise))
	if err != nil || size <= 0 {
		t.Errorf("downloading the wheel from the page: %v %v", size, err)
	}
	screenshot(t, b, "build-succeeded")

	// The slow build's log grows in place: the page is not reloaded (a
	// marker set on it survives) while new lines arrive.
	do(t, b, "run ticker", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css("#builder-py-web-ticker")),
		chromedp.Click(css("#builder-py-web-ticker button.run")), chromedp.WaitVisible(css("#log")))
	until(t, b, "the ticker's log to show tick 3", `/tick 3\b/.test(document.getElementById("log").textContent)`)
	first, err := chromedp.Run(b, chromedp.Evaluate[int](`window.pkgfleetMarker = true;
		(document.getElementById("log").textContent.match(/tick \d+/g) || []).length`))
	if err != nil {
		t.Fatal(err)
	}
	until(t, b, "the log to grow by 10 lines without a reload", fmt.Sprintf(
		`window.pkgfleetMarker === true && (document.getElementById("log").textContent.match(/tick \d+/g) || []).length >= %d`, first+10))
	if got := text(t, b, "#status"); got != "running" {
		t.Errorf("while the log grows the status says %q, want running", got)
	}
	screenshot(t, b, "build-running")
	do(t, b, "cancel it", chromedp.Click(css("#cancel")))
	until(t, b, "the build page to say canceled", statusIs("canceled"))
	if got := text(t, b, "#reason"); !strings.Contains(got, "canceled by token web-write") {
		t.Errorf("canceled build's reason: %q", got)
	}

	// An unknown build is a page that says so.
	do(t, b, "open an unknown build", chromedp.Navigate(base+"/builds/999999"), chromedp.WaitVisible(css("#problem")))
	if got := text(t, b, "#problem"); !strings.Contains(got, "build 999999 not found") {
		t.Errorf("unknown build: the page says %q", got)
	}

	// A read token sees everything and may do nothing.
	do(t, b, "sign out", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css("header form button")),
		chromedp.Click(css("header form button")), chromedp.WaitVisible(css("#token")))
	do(t, b, "sign in read-only", chromedp.SendKeys(css("#token"), tokens[auth.Read]),
		chromedp.Click(css("#signin")), chromedp.WaitVisible(css("#workers")))
	page := text(t, b, "main")
	for _, want := range []string{"py-web", "hellofleet-py", "ticker", "succeeded", "canceled",
		"pip install --index-url " + base + "/pypi/py-web/simple/", "PPM's formula", "polls every"} {
		if !strings.Contains(page, want) {
			t.Errorf("the read-only page lacks %q", want)
		}
	}
	buttons, err := chromedp.Run(b, chromedp.Evaluate[int](`document.querySelectorAll("main button").length`))
	if err != nil || buttons != 0 {
		t.Errorf("a read token sees %d buttons (%v), want none", buttons, err)
	}
	if worker := text(t, b, "#workers tbody tr"); !strings.Contains(worker, t.Name()) || !strings.Contains(worker, "Python") {
		t.Errorf("workers row %q lacks the worker's name and Python", worker)
	}
	html, err := chromedp.Run(b, chromedp.OuterHTML(css("html")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		if strings.Contains(html, tok) {
			t.Error("the page shows a token")
		}
	}
	screenshot(t, b, "builds-page")
}
