package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// doorRepo makes a one-commit repository of testdata/door/<name>.
func doorRepo(t *testing.T, name string) string {
	t.Helper()
	return versionedRepoFrom(t, testenv.CopyTree(t, filepath.Join("testdata", "door", name)))
}

// The fleet hosts its own build toolchain: a PEP 517 backend and a dynamic
// requirement are built offline into one source, and a package that needs
// both builds from another source with that source's index behind its
// door. A package whose requirement the index lacks fails in one line.
func TestPythonBuildGetsItsRequirementsFromTheFleetsOwnIndexThroughTheDoor(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	f.do("POST", "/api/v1/sources", map[string]string{"name": "tools", "type": "git-python"}, 201)
	tools := map[string]*registry.Build{}
	for _, name := range []string{"fleetbackend", "fleetextra"} {
		f.do("POST", "/api/v1/sources/tools/git-builders", map[string]any{"name": name, "url": "file://" + doorRepo(t, name)}, 201)
		tools[name] = f.mustSucceed(f.run("/api/v1/sources/tools/git-builders/"+name+"/run", nil))
		if len(tools[name].Fetched) != 0 {
			t.Errorf("offline build of %s fetched %+v", name, tools[name].Fetched)
		}
	}

	index := f.api.URL + "/pypi/tools/simple/"
	f.do("POST", "/api/v1/sources", map[string]string{"name": "apps", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/apps/git-builders", map[string]any{
		"name": "needsbackend", "url": "file://" + doorRepo(t, "needsbackend"), "python_index_url": index}, 201)
	b := f.mustSucceed(f.run("/api/v1/sources/apps/git-builders/needsbackend/run", nil))
	log := f.log(b.ID)
	if b.Package != "needsbackend" || !strings.Contains(log, "through the door") {
		t.Fatalf("build %+v\n%s", b, log)
	}
	// Provenance: both requirements, with the sha256 of the very wheels
	// the tools source holds.
	want := map[string]string{}
	for name, tb := range tools {
		for _, a := range tb.Artifacts {
			if a.Kind == "wheel" {
				want[name] = a.SHA256
			}
		}
	}
	got := map[string]string{}
	for _, fe := range b.Fetched {
		got[fe.Name] = fe.SHA256
		if fe.Version == "" || !strings.HasSuffix(fe.File, ".whl") {
			t.Errorf("fetched %+v lacks a version or is no wheel", fe)
		}
	}
	if len(got) != 2 || got["fleetbackend"] != want["fleetbackend"] || got["fleetextra"] != want["fleetextra"] {
		t.Fatalf("fetched %+v, want fleetbackend and fleetextra with sha256 %v\n%s", b.Fetched, want, log)
	}
	raw := f.do("GET", fmt.Sprintf("/api/v1/builds/%d", b.ID), nil, 200)
	var rec map[string]any
	_ = json.Unmarshal(raw, &rec)
	if _, ok := rec["fetched"]; !ok {
		t.Errorf("the API's build record has no \"fetched\": %s", raw)
	}

	f.do("POST", "/api/v1/sources/apps/git-builders", map[string]any{
		"name": "needsmissing", "url": "file://" + doorRepo(t, "needsmissing"), "python_index_url": index}, 201)
	m := f.wait(f.run("/api/v1/sources/apps/git-builders/needsmissing/run", nil).ID)
	if m.Status != registry.StatusFailed || strings.Contains(m.Detail, "\n") ||
		!strings.Contains(m.Detail, "pkgfleet-absent-requirement") || !strings.Contains(m.Detail, "Git.PythonIndexURL") {
		t.Fatalf("missing requirement: %s %q\n%s", m.Status, m.Detail, f.log(m.ID))
	}
}
