package worker

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
}

func testConfig(t *testing.T) *config.Config {
	dir := testenv.SharedDir(t)
	env := map[string]string{
		"PKGFLEET_SERVER_DATADIR":     filepath.Join(dir, "data"),
		"PKGFLEET_SERVER_TEMPDIR":     dir,
		"PKGFLEET_WORKER_CONCURRENCY": "3",
	}
	cfg := testenv.Config(t, env)
	os.MkdirAll(cfg.Server.DataDir, 0o755)
	os.WriteFile(filepath.Join(cfg.Server.DataDir, "secret"), []byte("s3cret"), 0o644)
	return cfg
}

func TestSandboxExecRunsLikeABuildAndPassesTheExitStatus(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "sh")
	cfg := testConfig(t)
	var out, errb bytes.Buffer
	code := SandboxCommand(context.Background(), cfg, []string{"exec", "--", "sh", "-c",
		"grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; cat " + filepath.Join(cfg.Server.DataDir, "secret") + "; exit 7"}, &out, &errb)
	if code != 7 {
		t.Fatalf("exit %d, want 7\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "s3cret") {
		t.Fatal("DataDir is readable inside sandbox exec")
	}
}

func TestSandboxCheckReportsDetectionAndTheNamespaceBudget(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "R", "python3")
	cfg := testConfig(t)
	out := bytes.NewBufferString("\n")
	code := SandboxCommand(context.Background(), cfg, []string{"check"}, out, out)
	if code != 0 {
		t.Fatalf("sandbox check exit %d:\n%s", code, out.String())
	}
	ns, err := sandbox.New(SandboxConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nsandbox tier: " + string(ns.Tier()) + " (gives up ",
		"Attempting to detect R version in a user namespace sandbox.", "Detected R version",
		"Attempting to detect Python version in a user namespace sandbox.", "Detected Python version",
		"this worker's 3 slots need 6 (2 per build): fits",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}
	if code := SandboxCommand(context.Background(), cfg, []string{"bogus"}, out, out); code != 2 {
		t.Errorf("unknown subcommand exit %d", code)
	}
}

func TestSandboxCheckNamesTierNoneAndTheRefusalWhenTheSandboxIsUnusable(t *testing.T) {
	t.Parallel()
	if !testenv.InUserNamespace(t) {
		return
	}
	testenv.SetMaxUserNamespaces(t, 1) // the sandbox needs two
	cfg := testConfig(t)
	out := bytes.NewBufferString("\n")
	if code := SandboxCommand(context.Background(), cfg, []string{"check"}, out, out); code != 1 {
		t.Fatalf("sandbox check exit %d, want 1:\n%s", code, out)
	}
	if !strings.Contains(out.String(), "\nsandbox tier: none (refused: ") || !strings.Contains(out.String(), "user namespace limit reached") {
		t.Fatalf("check output should start a line with the tier none and the refusal:\n%s", out)
	}
}

// TestAnUnreachableTempDirIsNamedTheSameEverywhere: a root worker whose
// TempDir the build user cannot reach refuses the sandbox with one line
// naming the directory, and sandbox check, the fleet list (the builds
// page's workers) and the worker's own start say the same line.
func TestAnUnreachableTempDirIsNamedTheSameEverywhere(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" && os.Getenv("PKGFLEET_TEST_UNPRIVILEGED") == "" {
			t.Fatal("CI must run this test as root")
		}
		t.Skip("needs root: only a root worker builds as another user")
	}
	testenv.Require(t, "R", "python3")
	cfg := testConfig(t)
	closed := filepath.Join(cfg.Server.TempDir, "home")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.Server.TempDir = filepath.Join(closed, "checkout", "var", "tmp")

	out := &bytes.Buffer{}
	if code := SandboxCommand(context.Background(), cfg, []string{"check"}, out, out); code != CheckPrecondition {
		t.Fatalf("sandbox check exit %d, want %d:\n%s", code, CheckPrecondition, out)
	}
	var line string
	for l := range strings.Lines(out.String()) {
		if r, ok := strings.CutPrefix(l, "sandbox: UNUSABLE: "); ok {
			line = strings.TrimSpace(r)
		}
	}
	if !strings.Contains(line, "cannot traverse "+closed+" (owner root:root, mode 0700)") || !strings.Contains(line, "remedy: set Server.TempDir") {
		t.Fatalf("sandbox check does not name the directory and the remedy:\n%s", out)
	}
	if strings.Contains(out.String(), "namespace sandbox unavailable") {
		t.Errorf("sandbox check blames user namespaces:\n%s", out)
	}

	_, err := New(context.Background(), cfg, testenv.Logger(t), Options{})
	if err == nil || !strings.Contains(err.Error(), line) || strings.Contains(err.Error(), "max_user_namespaces") {
		t.Errorf("the worker's start failure is %v, want the line %q and no kernel remedies", err, line)
	}

	own := *cfg
	own.Git.AllowUnsandboxedGitBuilds = true
	w, err := New(context.Background(), &own, testenv.Logger(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if info := w.Info(); info.SandboxTier != string(sandbox.TierNone) || info.SandboxRefusal != line {
		t.Errorf("the fleet list says tier %q, refusal %q; want none and %q", info.SandboxTier, info.SandboxRefusal, line)
	}
}
