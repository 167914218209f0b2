package fleettest_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/cli"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func (f *fleet) pkgfleet(args ...string) (string, int) {
	var out, errb bytes.Buffer
	app := &cli.App{Stdout: &out, Stderr: &errb, PollInterval: 50 * time.Millisecond,
		Getenv: func(k string) string {
			if k == "PKGFLEET_ADDRESS" {
				return f.api.URL
			}
			return ""
		}}
	code := cli.Main(context.Background(), args, app)
	return out.String() + errb.String(), code
}

func TestCLISetsWebhookSecretAndInitialTagsAndCancels(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	dir, sha := testenv.Repo(t, map[string]string{"DESCRIPTION": "Package: c\nVersion: 1\n"})
	f.do("POST", "/api/v1/sources", map[string]string{"name": "src", "type": "git"}, 201)
	out, code := f.pkgfleet("create", "git-builder", "--source", "src", "--name", "c", "--url", "file://"+dir,
		"--build-trigger", "tags", "--initial-tags", "3", "--webhook-secret", secret, "--wait=false")
	if code != 0 || strings.Contains(out, secret) {
		t.Fatalf("create: %d %s", code, out)
	}
	b, err := f.reg.Builder(context.Background(), "src", "c")
	if err != nil || b.InitialTags == nil || *b.InitialTags != 3 || !b.WebhookSecretSet {
		t.Fatalf("builder = %+v, %v", b, err)
	}
	// Without Git.CredentialKeyFile the secret is stored unsealed.
	if got, _ := f.reg.WebhookSecret(context.Background(), "src", "c"); got != "plain:"+secret {
		t.Fatal("the webhook secret was not stored")
	}
	if out, code := f.pkgfleet("edit", "git-builder", "--source", "src", "--name", "c", "--webhook-secret", ""); code != 0 {
		t.Fatalf("edit: %d %s", code, out)
	}
	if b, _ := f.reg.Builder(context.Background(), "src", "c"); b.WebhookSecretSet {
		t.Fatal("the secret is still set after removing it")
	}
	if got, _ := f.reg.WebhookSecret(context.Background(), "src", "c"); got != "" {
		t.Fatal("the removed secret is still stored")
	}

	id := f.rerun("c", sha)
	out, code = f.pkgfleet("cancel", "--build-id", fmt.Sprint(id))
	if code != 0 || !strings.Contains(out, "canceled") {
		t.Fatalf("cancel: %d %s", code, out)
	}
	if b := f.build(id); b.Status != registry.StatusCanceled {
		t.Fatalf("build is %s", b.Status)
	}
}

func TestCLIListsEveryGitBuilderAcrossPages(t *testing.T) {
	t.Parallel()
	f := setup(t, 1)
	f.do("POST", "/api/v1/sources", map[string]string{"name": "src", "type": "git"}, 201)
	for i := range 250 {
		b := &registry.Builder{Source: "src", Name: fmt.Sprintf("b%03d", i), URL: "https://example.invalid/r", BuildTrigger: "commits"}
		if err := f.reg.CreateBuilder(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	out, code := f.pkgfleet("list", "git-builders", "--source", "src")
	if n := strings.Count(out, "\n- b"); code != 0 || n != 250 || !strings.Contains(out, "- b249\n") {
		t.Fatalf("list git-builders: exit %d, %d builders listed, want all 250", code, n)
	}
}
