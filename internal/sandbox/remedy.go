//go:build linux

package sandbox

import (
	"errors"
	"strings"
	"syscall"
)

// The refusals below name the settings that would make the sandbox work,
// in the words of the place the worker runs: an operator reading a
// startup failure should not have to know what clone(2) is.

// Settings that let the sandbox start, per runtime (docs/sandbox.md has
// the measured table).
const (
	dockerSeccomp = "Docker: --security-opt seccomp=deploy/profiles/pkgfleet-worker.json " +
		"(or seccomp=unconfined, as Posit Package Manager documents)"
	kubeSeccomp = "Kubernetes: seccompProfile Localhost profiles/pkgfleet-worker.json " +
		"(or Unconfined, the chart's default for the worker)"
	dockerAppArmor = "Docker: --security-opt apparmor=pkgfleet-worker (deploy/profiles/pkgfleet-worker.apparmor) " +
		"or apparmor=unconfined"
	kubeAppArmor = "Kubernetes: appArmorProfile Localhost pkgfleet-worker, or Unconfined"
)

// startRemedy explains a stage B that could not even be cloned: the kernel
// or a seccomp profile refused the new namespaces.
func startRemedy(err error) string {
	if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EACCES) {
		return ""
	}
	return "In a container, the runtime's default seccomp profile refuses them: " +
		dockerSeccomp + "; " + kubeSeccomp + ". On a host: sysctl kernel.unprivileged_userns_clone=1 (Debian <= 10), " +
		"or an AppArmor profile with \"userns,\" (Ubuntu >= 23.10, see docs/sandbox.md)"
}

// setupRemedy explains a set-up step stage B or C could not take.
func setupRemedy(msg string) string {
	switch {
	case strings.Contains(msg, errNoLandlock.Error()):
		return "; the masked-proc tier needs Landlock to keep builds out of other processes' /proc entries. " +
			"Enable it (lsm=...,landlock), or give the worker an unmasked /proc for the full tier: " +
			"Docker: --security-opt systempaths=unconfined; Kubernetes: hostUsers: false with procMount: Unmasked " +
			"(the chart's worker.userNamespacedPod=true)"
	case strings.Contains(msg, "permission denied") && (strings.Contains(msg, "mount") || strings.Contains(msg, "pivot_root")):
		// EACCES, not EPERM, is how an LSM says no to a mount.
		return "; an AppArmor (or SELinux) policy refuses the sandbox's mounts: " + dockerAppArmor + "; " + kubeAppArmor
	case strings.Contains(msg, "operation not permitted") && strings.Contains(msg, "landlock"):
		return "; a seccomp profile refuses Landlock: " + dockerSeccomp + "; " + kubeSeccomp
	}
	return ""
}
