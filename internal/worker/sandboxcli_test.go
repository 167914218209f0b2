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
