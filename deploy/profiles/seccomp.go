//go:build linux

// Package profiles generates the seccomp profile shipped beside it,
// pkgfleet-worker.json, and says why each of its rules is there: it is the
// container runtime's default profile (Docker's, from the Go module
// github.com/moby/profiles/seccomp) resolved for a container without
// capabilities, plus the few syscalls the worker's sandbox needs to set
// itself up (Additions). `go test ./deploy -run TestSeccompProfile -update`
// rewrites the file; the tests in deploy and internal/containertest prove
// it is that and nothing more.
//
// It does not own the sandbox (internal/sandbox) or the filter the sandbox
// puts on every build (internal/sandbox/seccomp.go): this profile confines
// the worker container, the build's own filter is stricter still. The
// AppArmor profile beside it is written by hand (see its header).
package profiles

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// MobyProfilesVersion is the version of github.com/moby/profiles/seccomp
// in go.mod, the default profile of Docker Engine 29 (moby v2.0.0-beta.24
// and its master branch require it). The deploy tests check the two agree.
const MobyProfilesVersion = "v0.2.3"

// Arches are the Go architectures the profile is resolved for: the ones
// pkgfleet's sandbox supports (internal/sandbox/seccomp_*.go).
var Arches = []string{"amd64", "arm64"}

// MinKernel is the oldest kernel the sandbox runs on (mount_setattr, Linux
// 5.12). Default rules that need an older kernel are kept; a rule needing a
// newer one makes the generator fail, for a person to decide.
var MinKernel = seccomp.KernelVersion{Kernel: 5, Major: 12}

// An Addition is one rule the worker's sandbox needs beyond the runtime's
// default, with the reason, measured: without it, the sandbox fails at Step
// (the step's name as it appears in the sandbox's error).
type Addition struct {
	Names []string
	Args  []specs.LinuxSeccompArg // nil: any arguments
	When  string                  // Args in words, for the docs ("" with no Args)
	Step  string                  // how the sandbox's error names the step that fails without it
	Why   string
}

// Additions returns the rules pkgfleet-worker.json adds to the default, in
// the order the sandbox's set-up first needs them.
func Additions() []Addition {
	return []Addition{
		{
			Names: []string{"clone"},
			// Namespace flags only together with a new user namespace: the
			// default allows clone without namespace flags, and an
			// unprivileged process can create other namespaces only inside a
			// user namespace of its own anyway.
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: unix.CLONE_NEWUSER, ValueTwo: unix.CLONE_NEWUSER, Op: specs.OpMaskedEqual}},
			When: "with `CLONE_NEWUSER` among its flags (the default allows clone only without namespace flags)",
			Step: "new user namespaces are refused",
			Why:  "the sandbox's launcher clones stage B into new user, mount, PID, IPC, UTS and network namespaces, and stage B clones the build into a nested user namespace",
		},
		{
			Names: []string{"mount"},
			Step:  "make / private",
			Why:   "stage B makes its mount tree private, mounts the root tmpfs, binds the system directories, the build's directories, /proc and /dev",
		},
		{
			Names: []string{"mount_setattr"},
			Step:  "bind /usr",
			Why:   "binds become read-only, nosuid and nodev, recursively, down to every submount",
		},
		{
			Names: []string{"sethostname"},
			Step:  "sethostname",
			Why:   "the build's UTS namespace gets the neutral hostname pkgfleet-build",
		},
		{
			Names: []string{"pivot_root"},
			Step:  "pivot_root",
			Why:   "stage B switches to the new root, so no path of the container stays reachable",
		},
		{
			Names: []string{"umount2"},
			Step:  "detach old root",
			Why:   "the old root is detached after pivot_root",
		},
	}
}

// rule is one entry of the profile's syscalls list: runtime-spec's
// LinuxSyscall, which containerd reads as it is, plus the comment Docker
// and CRI-O accept (and containerd ignores) so the file explains itself.
type rule struct {
	Names    []string                 `json:"names"`
	Action   specs.LinuxSeccompAction `json:"action"`
	ErrnoRet *uint                    `json:"errnoRet,omitempty"`
	Args     []specs.LinuxSeccompArg  `json:"args,omitempty"`
	Comment  string                   `json:"comment,omitempty"`
}

// profile is the flat OCI form: no archMap, no includes or excludes. The
// kubelet's runtime reads a Localhost profile as runtime-spec JSON
// (containerd ignores Docker's conditions, so conditional rules would
// apply to every container); Docker reads this form as well.
type profile struct {
	DefaultAction   specs.LinuxSeccompAction `json:"defaultAction"`
	DefaultErrnoRet *uint                    `json:"defaultErrnoRet,omitempty"`
	Architectures   []specs.Arch             `json:"architectures"`
	Syscalls        []rule                   `json:"syscalls"`
}

// Seccomp returns pkgfleet-worker.json: the default, then every addition
// except those whose first name is in skip (the tests' "without it" runs).
func Seccomp(skip ...string) ([]byte, error) {
	p, err := resolveDefault()
	if err != nil {
		return nil, err
	}
	for _, a := range Additions() {
		if slices.Contains(skip, a.Names[0]) {
			continue
		}
		p.Syscalls = append(p.Syscalls, rule{Names: a.Names, Action: specs.ActAllow, Args: a.Args,
			Comment: fmt.Sprintf("pkgfleet sandbox: %s (without it: %q fails)", a.Why, a.Step)})
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "\t")
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Default returns the runtime default as pkgfleet-worker.json starts: the
// moby profile resolved for Arches, no capabilities and MinKernel.
func Default() ([]byte, error) {
	p, err := resolveDefault()
	if err != nil {
		return nil, err
	}
	return json.Marshal(p)
}

// resolveDefault flattens moby's conditional profile the way Docker does
// for one container (seccomp_linux.go setupSeccomp), but for every arch in
// Arches at once and for a container with no capabilities at all, which
// is how the chart and Docker's --cap-drop ALL run the worker.
func resolveDefault() (*profile, error) {
	def := seccomp.DefaultProfile()
	p := &profile{DefaultAction: def.DefaultAction, DefaultErrnoRet: def.DefaultErrnoRet}
	native := map[string]specs.Arch{"amd64": specs.ArchX86_64, "arm64": specs.ArchAARCH64}
	for _, goarch := range Arches {
		for _, a := range def.ArchMap {
			if a.Arch == native[goarch] {
				p.Architectures = append(p.Architectures, a.Arch)
				p.Architectures = append(p.Architectures, a.SubArches...)
			}
		}
	}
	for _, s := range def.Syscalls {
		keep, err := applies(s)
		if err != nil {
			return nil, err
		}
		if !keep {
			continue
		}
		if len(s.Names) == 0 {
			return nil, fmt.Errorf("a default rule without names: %+v", s.LinuxSyscall)
		}
		p.Syscalls = append(p.Syscalls, rule{Names: s.Names, Action: s.Action, ErrnoRet: s.ErrnoRet, Args: s.Args})
	}
	return p, nil
}

// applies reports whether a conditional default rule holds for some arch
// in Arches, in a container without capabilities, on MinKernel or newer.
func applies(s *seccomp.Syscall) (bool, error) {
	if in := s.Includes; in != nil {
		if len(in.Caps) > 0 {
			return false, nil // needs a capability the worker does not have
		}
		if len(in.Arches) > 0 && !slices.ContainsFunc(Arches, func(a string) bool { return slices.Contains(in.Arches, a) }) {
			return false, nil
		}
		if in.MinKernel != nil && !kernelAtLeast(MinKernel, *in.MinKernel) {
			return false, fmt.Errorf("default rule for %v needs kernel %s, newer than the sandbox's minimum %s: decide whether to keep it", s.Names, in.MinKernel, &MinKernel)
		}
	}
	if ex := s.Excludes; ex != nil {
		// Excluded by a capability: the worker has none, so the rule stays.
		if len(ex.Arches) > 0 && !slices.ContainsFunc(Arches, func(a string) bool { return !slices.Contains(ex.Arches, a) }) {
			return false, nil
		}
		if ex.MinKernel != nil {
			return false, fmt.Errorf("default rule for %v is excluded from kernel %s on: decide whether to keep it", s.Names, ex.MinKernel)
		}
	}
	return true, nil
}

func kernelAtLeast(have, want seccomp.KernelVersion) bool {
	return have.Kernel > want.Kernel || (have.Kernel == want.Kernel && have.Major >= want.Major)
}

// AdditionsTable is the Markdown table of Additions that docs/sandbox.md
// shows (deploy's tests keep the two in step).
func AdditionsTable() string {
	var b bytes.Buffer
	b.WriteString("| syscall | allowed | without it the sandbox fails at | why |\n|---|---|---|---|\n")
	for _, a := range Additions() {
		when := a.When
		if when == "" {
			when = "always"
		}
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", strings.Join(a.Names, "`, `"), when, a.Step, a.Why)
	}
	return b.String()
}
