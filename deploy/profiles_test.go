package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
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

// apparmorProfile is the shipped AppArmor profile's path.
var apparmorProfile = repoPath("deploy", "profiles", "pkgfleet-worker.apparmor")

// apparmor4 returns the AppArmor 4 parser scripts/deploy-deps.sh unpacks
// into the user cache, and its own policy directory.
func apparmor4(t *testing.T) (parser, base string) {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, "pkgfleet", "tools", "apparmor-4")
	parser = filepath.Join(dir, "apparmor_parser")
	if _, err := os.Stat(parser); err != nil {
		missingTool(t, "AppArmor 4 parser: %v (bash scripts/deploy-deps.sh unpacks it)", err)
	}
	return parser, filepath.Join(dir, "root", "etc", "apparmor.d")
}

// apparmor3 returns the host's apparmor_parser (Debian 12: AppArmor 3).
func apparmor3(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"apparmor_parser", "/usr/sbin/apparmor_parser", "/sbin/apparmor_parser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	missingTool(t, "apparmor_parser not installed (Debian's apparmor package)")
	return ""
}

// compileAppArmor compiles a profile without loading it (this kernel may
// have AppArmor off) against the features of abi, warnings as errors, and
// returns the profile names it defines.
func compileAppArmor(t *testing.T, parser, abi, profile string) ([]string, error) {
	t.Helper()
	out, err := exec.Command(parser, "--skip-kernel-load", "--skip-cache", "--features-file", abi,
		"--Werror", "--names", profile).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s: %v\n%s", parser, err, out)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if l != "" && !strings.HasPrefix(l, "Cache read/write disabled") {
			names = append(names, l)
		}
	}
	return names, nil
}

// TestAppArmorProfileCompilesWithAppArmor4 compiles the shipped profile as
// a node with AppArmor >= 4.0 (Ubuntu >= 23.10) would load it.
func TestAppArmorProfileCompilesWithAppArmor4(t *testing.T) {
	parser, base := apparmor4(t)
	names, err := compileAppArmor(t, parser, filepath.Join(base, "abi", "4.0"), apparmorProfile)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"pkgfleet-worker"}) {
		t.Errorf("profiles %q, want exactly pkgfleet-worker (the name the chart's localhostProfile uses)", names)
	}
	// The parser really checks: one unknown rule and it refuses the profile.
	broken := filepath.Join(t.TempDir(), "broken")
	text := strings.Replace(string(readRepoFile(t, "deploy", "profiles", "pkgfleet-worker.apparmor")), "pivot_root,", "pivot_root_typo,", 1)
	if err := os.WriteFile(broken, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := compileAppArmor(t, parser, filepath.Join(base, "abi", "4.0"), broken); err == nil {
		t.Error("a profile with an unknown rule compiled: the check proves nothing")
	}
}

// TestAppArmorProfileCompilesWithAppArmor3 runs the sed line the profile's
// header gives for AppArmor 3 nodes (Debian 12, Ubuntu 22.04) and compiles
// the result with the host's parser.
func TestAppArmorProfileCompilesWithAppArmor3(t *testing.T) {
	parser := apparmor3(t)
	text := string(readRepoFile(t, "deploy", "profiles", "pkgfleet-worker.apparmor"))
	m := regexp.MustCompile(`(?m)^#\s+(sed .*) pkgfleet-worker\.apparmor$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no AppArmor 3 sed line in the profile's header")
	}
	out, err := exec.Command("sh", "-c", m[1]+` "$1"`, "sh", apparmorProfile).Output()
	if err != nil {
		t.Fatalf("%s: %v", m[1], err)
	}
	if regexp.MustCompile(`(?m)^\s*userns,`).Match(out) {
		t.Fatal("the AppArmor 3 variant still has the userns rule")
	}
	v3 := filepath.Join(t.TempDir(), "pkgfleet-worker")
	if err := os.WriteFile(v3, out, 0o644); err != nil {
		t.Fatal(err)
	}
	names, err := compileAppArmor(t, parser, "/etc/apparmor.d/abi/3.0", v3)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"pkgfleet-worker"}) {
		t.Errorf("profiles %q, want exactly pkgfleet-worker", names)
	}
}

// TestAppArmorProfileAddsWhatTheSandboxNeeds: the rules the sandbox needs
// are there, and docker-default's blanket mount denial is not (a deny
// would win over every mount rule).
func TestAppArmorProfileAddsWhatTheSandboxNeeds(t *testing.T) {
	text := string(readRepoFile(t, "deploy", "profiles", "pkgfleet-worker.apparmor"))
	var rules []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			rules = append(rules, l)
		}
	}
	for _, want := range []string{"userns,", "pivot_root,", "umount,", "mount options=(rw, rprivate) -> /,",
		"mount fstype=proc options=(rw, nosuid, nodev, noexec) proc -> /**,", "mount options=(rw, rbind) -> /**,",
		"deny @{PROC}/sysrq-trigger rwklx,", "deny /sys/firmware/** rwklx,"} {
		if !slices.Contains(rules, want) {
			t.Errorf("no rule %q", want)
		}
	}
	for _, r := range rules {
		if r == "deny mount," || r == "deny @{PROC}/sys/[^k]** w," {
			t.Errorf("rule %q would deny what the sandbox needs", r)
		}
	}
}
