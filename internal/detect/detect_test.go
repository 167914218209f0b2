package detect

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// fakeR installs a shell script that answers the probe like R would.
func fakeR(t *testing.T, home, version string) {
	t.Helper()
	os.MkdirAll(filepath.Join(home, "bin"), 0o755)
	script := "#!/bin/sh\necho " + version + "\necho " + home + "\n"
	if err := os.WriteFile(filepath.Join(home, "bin", "R"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func detector(t *testing.T, logs *bytes.Buffer) *Detector {
	return &Detector{
		Runner:  sandbox.NewDirect(sandbox.Config{TempDir: t.TempDir()}),
		Log:     slog.New(slog.NewTextHandler(logs, nil)),
		TempDir: t.TempDir(),
		RSystem: []string{}, PythonRoots: []string{}, PathEnv: "/nonexistent",
	}
}

func TestNewestRWinsAndPPMLinesArePrinted(t *testing.T) {
	t.Parallel()
	opt := t.TempDir()
	fakeR(t, filepath.Join(opt, "4.3.2"), "4.3.2")
	fakeR(t, filepath.Join(opt, "4.10.0"), "4.10.0")
	fakeR(t, filepath.Join(opt, "3.6.3"), "3.6.3")
	var logs bytes.Buffer
	d := detector(t, &logs)
	d.RRoots = []string{opt}
	tool, err := d.R(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if tool.Version != "4.10.0" || tool.Path != filepath.Join(opt, "4.10.0") {
		t.Fatalf("detected %+v, want the newest, 4.10.0", tool)
	}
	for _, line := range []string{"Attempting to detect R version", "Detected R version 4.10.0 at " + filepath.Join(opt, "4.10.0")} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, logs.String())
		}
	}
}

func TestConfiguredRThatDoesNotRunDisablesR(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	d := detector(t, &logs)
	_, err := d.R(context.Background(), "/nonexistent/R/4.4.1")
	if err == nil {
		t.Fatal("a missing R was detected")
	}
	if !strings.Contains(logs.String(), "Warning: Unable to use R on this system. Building Git packages for R will be disabled.") {
		t.Fatalf("log lacks PPM's warning:\n%s", logs.String())
	}
}

func TestPythonWithoutTheBuildModuleIsSkipped(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	// A python that fails the probe (no build module) and one that passes.
	os.WriteFile(filepath.Join(bin, "python3"), []byte("#!/bin/sh\necho 'No module named build' >&2\nexit 1\n"), 0o755)
	good := t.TempDir()
	os.WriteFile(filepath.Join(good, "python3"), []byte("#!/bin/sh\necho 3.12.1\necho "+good+"/python3\n"), 0o755)
	var logs bytes.Buffer
	d := detector(t, &logs)
	d.PathEnv = bin + ":" + good
	tool, err := d.Python(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if tool.Path != filepath.Join(good, "python3") || tool.Version != "3.12.1" {
		t.Fatalf("detected %+v, want the python with build", tool)
	}
	if !strings.Contains(logs.String(), "Detected Python version 3.12.1") {
		t.Fatalf("log:\n%s", logs.String())
	}
}

// The platform is os-release's ID-VERSION_ID, quoted or not; a rolling
// distribution is its ID; a file that names no ID is an error.
func TestPlatformIsOSReleaseIDAndVersion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct{ text, want string }{
		{"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n", "debian-12"},
		{"ID=ubuntu\nVERSION_ID=\"24.04\"\nID_LIKE=debian\n", "ubuntu-24.04"},
		{"ID=arch\nBUILD_ID=rolling\n", "arch"},
		{"NAME=nothing\n", ""},
	} {
		p := filepath.Join(dir, "os-release")
		if err := os.WriteFile(p, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := Platform(p)
		if got != c.want || (err != nil) != (c.want == "") {
			t.Errorf("%q: %q, %v; want %q", c.text, got, err, c.want)
		}
	}
}
