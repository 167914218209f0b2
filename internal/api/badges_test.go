package api

import (
	"context"
	"encoding/xml"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// badgeFixture makes source src with builder pkg and one finished build of
// it: version 1.2.3, status, and a check verdict when check is set.
func badgeFixture(t *testing.T, h *harness, status string, check *apiv1.Check) {
	t.Helper()
	ctx := context.Background()
	reg := h.srv.Registry
	if _, err := reg.CreateSource(ctx, registry.Source{Name: "src", Type: registry.TypeGit}); err != nil {
		t.Fatal(err)
	}
	if err := reg.CreateBuilder(ctx, &registry.Builder{Source: "src", Name: "pkg", Language: "r",
		URL: "https://git.invalid/pkg.git", BuildTrigger: registry.TriggerCommits, CloneDepth: 1}); err != nil {
		t.Fatal(err)
	}
	b, _, err := reg.CreateBuild(ctx, &registry.Build{Source: "src", Builder: "pkg", Language: "r",
		Ref: "main", SHA: strings.Repeat("a", 40), Trigger: "manual", MaxAttempts: 1}, registry.ReuseActive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.UpdateBuild(ctx, b.ID, func(b *registry.Build) error {
		b.Status, b.Version, b.Check = status, "1.2.3", check
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// get fetches path with an optional bearer token and extra headers.
func (h *harness) get(path, token string, hdr ...string) (*http.Response, string) {
	h.t.Helper()
	req, _ := http.NewRequest("GET", h.url+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// svgTexts parses an SVG and returns what its <title> says.
func svgTitle(t *testing.T, svg string) string {
	t.Helper()
	var doc struct {
		XMLName xml.Name `xml:"svg"`
		Title   string   `xml:"title"`
	}
	if err := xml.Unmarshal([]byte(svg), &doc); err != nil {
		t.Fatalf("the badge is not an SVG document: %v\n%s", err, svg)
	}
	return doc.Title
}

func TestBadgeShowsTheNewestBuildAndIsRevalidated(t *testing.T) {
	t.Parallel()
	h := setup(t, true) // tokens, and the indexes public (the default)
	badgeFixture(t, h, registry.StatusFailed, &apiv1.Check{Verdict: "WARNING", Warnings: 1})
	resp, body := h.get("/badges/src/pkg.svg", "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/svg+xml" {
		t.Fatalf("public badge without a token: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if got := svgTitle(t, body); got != "pkg: 1.2.3 failed: check WARNING" {
		t.Errorf("badge says %q", got)
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-cache") {
		t.Errorf("Cache-Control %q: a badge must be revalidated", cc)
	}
	etag := resp.Header.Get("ETag")
	if resp, _ := h.get("/badges/src/pkg.svg", "", "If-None-Match", etag); etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Errorf("same ETag %q again: %d, want 304", etag, resp.StatusCode)
	}
	for _, path := range []string{"/badges/src/nope.svg", "/badges/nope/pkg.svg", "/badges/src/pkg.png"} {
		if resp, _ := h.get(path, ""); resp.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
}

// TestPrivateBadgeNeedsAReadToken: with the indexes behind a token, a
// badge is too, and a caller without one learns nothing, not even whether
// the builder exists.
func TestPrivateBadgeNeedsAReadToken(t *testing.T) {
	t.Parallel()
	h := setup(t, true, map[string]string{"PKGFLEET_HTTP_PUBLICINDEXES": "false"})
	badgeFixture(t, h, registry.StatusSucceeded, nil)
	exists, body1 := h.get("/badges/src/pkg.svg", "")
	missing, body2 := h.get("/badges/src/nope.svg", "")
	if exists.StatusCode != 401 || missing.StatusCode != 401 || body1 != body2 {
		t.Errorf("no token: %d and %d (bodies equal: %v), want the same 401 for an existing and a missing builder",
			exists.StatusCode, missing.StatusCode, body1 == body2)
	}
	if resp, _ := h.get("/badges/src/pkg.svg", "pkf_wrong"); resp.StatusCode != 401 {
		t.Errorf("wrong token: %d, want 401", resp.StatusCode)
	}
	resp, body := h.get("/badges/src/pkg.svg", h.tok["read"])
	if resp.StatusCode != 200 || svgTitle(t, body) != "pkg: 1.2.3 succeeded" {
		t.Errorf("read token: %d %q", resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "private") {
		t.Errorf("Cache-Control %q of a private badge, want private", cc)
	}
}

// TestBadgeRendersOnTheBuildsPageInChromium opens the builds page in
// headless Chromium signed in with a read token (the indexes private, so
// the badge's request carries the page's cookie) and checks that the
// builder's badge image loaded and has the width its SVG gives.
func TestBadgeRendersOnTheBuildsPageInChromium(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "chromium")
	h := setup(t, true, map[string]string{"PKGFLEET_HTTP_PUBLICINDEXES": "false"})
	badgeFixture(t, h, registry.StatusSucceeded, &apiv1.Check{Verdict: "OK"})
	path, _ := exec.LookPath("chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	if err := chromedp.Do(ctx, chromedp.Navigate(h.url+"/login"), chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), h.tok["read"]), chromedp.Click(css("#signin")),
		chromedp.WaitVisible(css("img.status-badge"))); err != nil {
		t.Fatalf("sign in and open the builds page: %v", err)
	}
	var width float64
	testenv.Eventually(t, time.Minute, "the badge image to load", func() bool {
		var err error
		width, err = chromedp.Run(ctx, chromedp.Evaluate[float64](`(() => { const i = document.querySelector("img.status-badge");
			return i && i.complete ? i.naturalWidth : 0 })()`))
		return err == nil && width > 0
	})
	_, svg := h.get("/badges/src/pkg.svg", h.tok["read"])
	var doc struct {
		Width float64 `xml:"width,attr"`
	}
	if err := xml.Unmarshal([]byte(svg), &doc); err != nil || doc.Width != width {
		t.Errorf("the badge shows %vpx wide in Chromium, its SVG says %v (%v)", width, doc.Width, err)
	}
}
