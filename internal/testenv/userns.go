//go:build linux

package testenv

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
)

// usernsEnv marks the child process InUserNamespace starts, with the name
// of the test it runs.
const usernsEnv = "PKGFLEET_TEST_IN_USERNS"

// InUserNamespace runs the calling test again in a child process of the
// test binary inside a new user namespace, where it is root (uids and
// gids 0–65535 map to the same host ids, so the sandbox's run-as user
// exists) and owns its own /proc/sys/user limits: a test may lower
// max_user_namespaces there (SetMaxUserNamespaces) without touching the
// host's. The child runs TestMain as usual (its own redis-server).
//
// It returns true in the child, where the test goes on, and false in the
// parent once the child has finished: the child's output is logged, and
// its failure fails the test. Mapping those ids needs root; without it
// the test fails under CI=true and is skipped otherwise.
func InUserNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(usernsEnv) == t.Name() {
		return true
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test maps uids 0-65535 into a user namespace and needs root (CI=true)")
		}
		t.Skip("needs root to map uids 0-65535 into a user namespace")
	}
	args := []string{"-test.run=^" + regexp.QuoteMeta(t.Name()) + "$", "-test.count=1", "-test.v"}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), usernsEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}},
		GidMappingsEnableSetgroups: true,
	}
	out, err := cmd.CombinedOutput()
	t.Logf("in a user namespace:\n%s", out)
	if err != nil {
		t.Fatalf("the test failed in its user namespace: %v", err)
	}
	if !regexp.MustCompile(`(?m)^--- PASS: ` + regexp.QuoteMeta(t.Name()) + ` `).Match(out) {
		t.Fatal("the test did not run in its user namespace")
	}
	return false
}

// SetMaxUserNamespaces writes n to /proc/sys/user/max_user_namespaces of
// the calling process's user namespace (inside InUserNamespace).
func SetMaxUserNamespaces(t testing.TB, n int) {
	t.Helper()
	if os.Getenv(usernsEnv) == "" {
		t.Fatal("SetMaxUserNamespaces outside InUserNamespace would change the host's limit")
	}
	if err := os.WriteFile("/proc/sys/user/max_user_namespaces", []byte(strconv.Itoa(n)), 0); err != nil {
		t.Fatalf("set max_user_namespaces: %v", err)
	}
}
