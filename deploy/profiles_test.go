package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/pkgfleet/pkgfleet/deploy/profiles"
)

// TestSeccompProfileIsDefaultPlusAdditions holds deploy/profiles/pkgfleet-worker.json
// to what deploy/profiles generates: the runtime default, then the
// sandbox's additions. With -update it rewrites the file.
func TestSeccompProfileIsDefaultPlusAdditions(t *testing.T) {
	want, err := profiles.Seccomp()
	if err != nil {
		t.Fatal(err)
	}
	path := repoPath("deploy", "profiles", "pkgfleet-worker.json")
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := readRepoFile(t, "deploy", "profiles", "pkgfleet-worker.json")
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not the generated profile; run: go test ./deploy -run TestSeccompProfile -update", path)
	}

	// The file's rules are the default's, in order, then one per addition.
	var file struct {
		DefaultAction specs.LinuxSeccompAction `json:"defaultAction"`
		Architectures []specs.Arch             `json:"architectures"`
		Syscalls      []json.RawMessage        `json:"syscalls"`
	}
	if err := json.Unmarshal(got, &file); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var def struct{ Syscalls []json.RawMessage }
	defJSON, err := profiles.Default()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(defJSON, &def); err != nil {
		t.Fatal(err)
	}
	adds := profiles.Additions()
	if len(file.Syscalls) != len(def.Syscalls)+len(adds) {
		t.Fatalf("%d rules, want the default's %d plus %d additions", len(file.Syscalls), len(def.Syscalls), len(adds))
	}
	for i, r := range def.Syscalls {
		var a, b specs.LinuxSyscall
		_ = json.Unmarshal(r, &a)
		_ = json.Unmarshal(file.Syscalls[i], &b)
		if !equalRule(a, b) {
			t.Errorf("rule %d is %v, the default's is %v", i, b, a)
		}
	}
	if file.DefaultAction == specs.ActAllow || file.DefaultAction == "" {
		t.Errorf("defaultAction %q: a profile must deny what it does not list", file.DefaultAction)
	}
	for _, a := range []specs.Arch{specs.ArchX86_64, specs.ArchAARCH64} {
		if !slices.Contains(file.Architectures, a) {
			t.Errorf("architectures %v lack %s", file.Architectures, a)
		}
	}
}

func equalRule(a, b specs.LinuxSyscall) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestSeccompProfileKeepsDeniedWhatTheSandboxDoesNotNeed checks the file
// itself, rule by rule: every syscall moby's profile allows only under a
// condition the worker does not meet (a capability) stays denied unless
// it is one of the additions, open_by_handle_at above all (the escape
// suite's one attack that gets through without seccomp).
func TestSeccompProfileKeepsDeniedWhatTheSandboxDoesNotNeed(t *testing.T) {
	var file struct {
		Syscalls []specs.LinuxSyscall `json:"syscalls"`
	}
	if err := json.Unmarshal(readRepoFile(t, "deploy", "profiles", "pkgfleet-worker.json"), &file); err != nil {
		t.Fatal(err)
	}
	// allowed: unconditionally; limited: only with argument conditions.
	allowed, limited := map[string]bool{}, map[string]bool{}
	for _, r := range file.Syscalls {
		if r.Action != specs.ActAllow {
			continue
		}
		for _, n := range r.Names {
			if len(r.Args) == 0 {
				allowed[n] = true
			} else {
				limited[n] = true
			}
		}
	}
	added := map[string]bool{}
	for _, a := range profiles.Additions() {
		for _, n := range a.Names {
			added[n] = true
		}
	}
	// Allowed by moby's profile with a capability, and not without one.
	defJSON, err := profiles.Default()
	if err != nil {
		t.Fatal(err)
	}
	var def struct{ Syscalls []specs.LinuxSyscall }
	if err := json.Unmarshal(defJSON, &def); err != nil {
		t.Fatal(err)
	}
	byDefault := map[string]bool{}
	for _, r := range def.Syscalls {
		if r.Action == specs.ActAllow && len(r.Args) == 0 {
			for _, n := range r.Names {
				byDefault[n] = true
			}
		}
	}
	var gated []string
	for _, s := range seccomp.DefaultProfile().Syscalls {
		if s.Includes != nil && len(s.Includes.Caps) > 0 {
			for _, n := range s.Names {
				if !byDefault[n] {
					gated = append(gated, n)
				}
			}
		}
	}
	if len(gated) < 30 {
		t.Fatalf("only %d capability-gated syscalls in moby's default: did its layout change?", len(gated))
	}
	for _, n := range gated {
		if allowed[n] && !added[n] {
			t.Errorf("%s is allowed, but the default allows it only with a capability and the sandbox does not need it", n)
		}
	}
	// Named because they matter most: the escape suite's file-handle
	// attack, and kernel surfaces no build tool needs.
	for _, n := range []string{"open_by_handle_at", "unshare", "setns", "bpf", "perf_event_open",
		"kexec_load", "init_module", "finit_module", "add_key", "keyctl", "request_key"} {
		if allowed[n] || limited[n] {
			t.Errorf("%s is allowed; it must stay denied", n)
		}
	}
	// clone with namespace flags only with CLONE_NEWUSER: the other
	// namespace-creating clones stay denied.
	var cloneRules int
	for _, r := range file.Syscalls {
		if slices.Contains(r.Names, "clone") && r.Action == specs.ActAllow {
			cloneRules++
			if len(r.Args) == 0 {
				t.Errorf("clone allowed with any flags")
			}
		}
	}
	if cloneRules != 2 {
		t.Errorf("%d clone rules, want the default's and the sandbox's", cloneRules)
	}
}

// TestSeccompProfileModuleVersion keeps profiles.MobyProfilesVersion, which
// the docs quote, in step with go.mod.
func TestSeccompProfileModuleVersion(t *testing.T) {
	re := regexp.MustCompile(`(?m)^\s*github\.com/moby/profiles/seccomp (v\S+)`)
	m := re.FindSubmatch(readRepoFile(t, "go.mod"))
	if m == nil || string(m[1]) != profiles.MobyProfilesVersion {
		t.Fatalf("go.mod has github.com/moby/profiles/seccomp %s, profiles.MobyProfilesVersion is %s", m, profiles.MobyProfilesVersion)
	}
}
