package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
)

// runOnce runs "pkgfleet run" against a stub API whose build 7 is done
// as done says, and returns what it printed and its exit code.
func runOnce(t *testing.T, done apiv1.Build) (string, int) {
	t.Helper()
	queued := done
	queued.Status, queued.Detail, queued.Fetched, queued.Warnings = apiv1.StatusQueued, "", nil, nil
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "POST /api/v1/sources/apps/git-builders/app/run":
			_ = json.NewEncoder(w).Encode(apiv1.Run{Builds: []*apiv1.Build{&queued}, New: 1})
		case "GET /api/v1/builds/7":
			_ = json.NewEncoder(w).Encode(done)
		default:
			http.NotFound(w, r)
		}
	}))
	defer api.Close()
	var out, errb bytes.Buffer
	app := &App{Stdout: &out, Stderr: &errb, PollInterval: time.Millisecond, Getenv: func(k string) string {
		if k == "PKGFLEET_ADDRESS" {
			return api.URL
		}
		return ""
	}}
	code := Main(context.Background(), []string{"run", "git-builder", "--source", "apps", "--name", "app"}, app)
	return out.String() + errb.String(), code
}

// A unit test of the output alone, against a stub API (the whole path runs
// against a real fleet in internal/e2e): when a build ends, run says what it
// fetched through its door, succeeded or not.
func TestRunShowsWhatTheBuildsFetchedThroughTheDoor(t *testing.T) {
	done := apiv1.Build{ID: 7, Builder: "app", Ref: "main", SHA: strings.Repeat("a", 40), Status: apiv1.StatusFailed, Detail: "a requirement is missing"}
	done.Fetched = []apiv1.Fetched{{Name: "fleetbackend", Version: "1.0.0", File: "fleetbackend-1.0.0-py3-none-any.whl", SHA256: "0123456789abcdef" + strings.Repeat("f", 48)}}
	out, code := runOnce(t, done)
	if code == 0 {
		t.Errorf("run of a failed build exited 0")
	}
	want := "Build 7 fetched through the door: fleetbackend 1.0.0 sha256:0123456789ab\n"
	if !strings.Contains(out, want) {
		t.Errorf("run output lacks %q:\n%s", want, out)
	}
}

// When a build ends, run counts its metadata warnings on the build's line
// and prints each.
func TestRunShowsTheBuildsMetadataWarnings(t *testing.T) {
	done := apiv1.Build{ID: 7, Builder: "app", Ref: "main", SHA: strings.Repeat("a", 40), Status: apiv1.StatusSucceeded,
		Package: "app", Version: "1.0", Warnings: []string{"sdist PKG-INFO: line 7: no blank line between the headers and the description"}}
	out, code := runOnce(t, done)
	for _, want := range []string{"app 1.0 →  (1 metadata warning)\n", "Build 7 warning: sdist PKG-INFO: line 7: no blank line between the headers and the description\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("run (exit %d) output lacks %q:\n%s", code, want, out)
		}
	}
}

// When a build with a check ends, run shows the verdict on its line.
func TestRunShowsTheBuildsCheckVerdict(t *testing.T) {
	done := apiv1.Build{ID: 7, Builder: "app", Ref: "main", SHA: strings.Repeat("a", 40), Status: apiv1.StatusSucceeded,
		Package: "app", Version: "1.0", Check: &apiv1.Check{Verdict: apiv1.CheckWarning, Warnings: 1, Notes: 2}}
	out, code := runOnce(t, done)
	if want := "app 1.0 → , check WARNING 1W 2N\n"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("run (exit %d) output lacks %q:\n%s", code, want, out)
	}
	if got := checkColumn(&apiv1.Check{Verdict: apiv1.CheckError, Errors: 1, Gated: true}); got != "ERROR 1E gated" {
		t.Errorf("CHECK column of a gated ERROR = %q", got)
	}
}

// A finished build's line says what its binary was built for.
func TestProgressLineNamesTheBinarysPlatformAndR(t *testing.T) {
	t.Parallel()
	b := &apiv1.Build{ID: 7, Builder: "cfleet", Ref: "main", SHA: "0123456789abcdef", Status: apiv1.StatusSucceeded, Package: "cfleet", Version: "1.0.0",
		Artifacts: []apiv1.Artifact{{File: "cfleet_1.0.0.tar.gz", Kind: "source"},
			{File: "cfleet_1.0.0_R_x86_64-pc-linux-gnu.tar.gz", Kind: "binary", Platform: "debian-12", RVersion: "4.2"}}}
	if got, want := progressLine(b, 0), "cfleet_1.0.0.tar.gz, cfleet_1.0.0_R_x86_64-pc-linux-gnu.tar.gz (debian-12, R 4.2)"; !strings.Contains(got, want) {
		t.Errorf("%q lacks %q", got, want)
	}
}
