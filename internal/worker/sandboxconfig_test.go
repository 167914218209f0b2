package worker

import (
	"slices"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/config"
)

// In a pod whose ServiceAccount carries an IAM role (IRSA, the chart's
// serviceAccount.annotations), the AWS web-identity token grants the
// artifact bucket: the sandbox hides its directory from builds, as it
// hides the config and the filesystem store.
func TestSandboxConfigHidesTheWebIdentityToken(t *testing.T) {
	cfg, err := config.Load(config.Source{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks.amazonaws.com/serviceaccount/token")
	if got := SandboxConfig(cfg).StorageLocations; !slices.Contains(got, "/var/run/secrets/eks.amazonaws.com/serviceaccount") {
		t.Errorf("masked beside the stores: %v, want the token's directory", got)
	}
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "")
	if got := SandboxConfig(cfg).StorageLocations; len(got) != 1 || got[0] != cfg.FileStorage.Location {
		t.Errorf("without a token: %v, want the filesystem store only", got)
	}
}
