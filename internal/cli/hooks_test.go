package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
)

// A unit test of the hook commands' flags and output against a stub API
// (the API's checks are tested in internal/api): the secret goes from its
// file into the request and nowhere into the output, a builder's hooks
// are under its path, and the listings show what the API answers.
func TestHookCommandsSendTheSecretFromAFileAndShowHooksAndDeliveries(t *testing.T) {
	const secret = "s3cret-from-a-file-0123"
	var got []string
	var created apiv1.NewHook
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path)
		hook := apiv1.Hook{ID: "ab12", Source: "src", Builder: "pkg", URL: "https://hooks.example/…", SecretSet: true}
		switch r.Method + " " + r.URL.Path {
		case "POST /api/v1/sources/src/git-builders/pkg/hooks":
			_ = json.NewDecoder(r.Body).Decode(&created)
			w.WriteHeader(201)
			_ = json.NewEncoder(w).Encode(hook)
		case "GET /api/v1/sources/src/git-builders/pkg/hooks":
			_ = json.NewEncoder(w).Encode(apiv1.Hooks{Hooks: []apiv1.Hook{hook}})
		case "GET /api/v1/sources/src/hooks/ab12/deliveries":
			_ = json.NewEncoder(w).Encode(apiv1.HookDeliveries{Deliveries: []apiv1.HookDelivery{
				{ID: "ab12-7", Build: 7, Event: "failure", Attempt: 2, Result: "retrying", Status: 500, Error: "the receiver answered 500", At: time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)}}})
		case "DELETE /api/v1/sources/src/hooks/ab12":
			w.WriteHeader(204)
		default:
			http.NotFound(w, r)
		}
	}))
	defer api.Close()
	secretFile := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	var out, errb bytes.Buffer
	app := &App{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == "PKGFLEET_ADDRESS" {
			return api.URL
		}
		return ""
	}}
	run := func(args ...string) {
		t.Helper()
		if code := Main(context.Background(), args, app); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out.String(), errb.String())
		}
	}
	run("create", "hook", "--source", "src", "--name", "pkg", "--url", "https://hooks.example/services/x", "--secret-file", secretFile, "--every-build")
	run("list", "hooks", "--source", "src", "--name", "pkg")
	run("list", "deliveries", "--source", "src", "--id", "ab12")
	run("delete", "hook", "--source", "src", "--id", "ab12")
	if created.Secret != secret || created.URL != "https://hooks.example/services/x" || !created.EveryBuild || created.Slack {
		t.Errorf("create sent %+v", created)
	}
	if len(got) != 4 {
		t.Errorf("requests: %v", got)
	}
	for _, want := range []string{"Hook ab12 created: https://hooks.example/….",
		"ab12  https://hooks.example/…  failure,recovery  json  true",
		"2026-12-07T03:00:00Z  7      failure  2        retrying  500     the receiver answered 500",
		"Hook ab12 deleted."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String()+errb.String(), secret) {
		t.Error("the CLI printed the hook's secret")
	}
}
