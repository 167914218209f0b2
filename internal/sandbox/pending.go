package sandbox

import "errors"

// Placeholder until the namespace runner lands: the sandbox counts as
// unavailable, so builds need Git.AllowUnsandboxedGitBuilds.

// ErrNamespaceLimit is returned when the kernel refuses a new namespace.
var ErrNamespaceLimit = errors.New("user namespace limit reached (see /proc/sys/user/max_user_namespaces)")

// Namespaces is the user-namespace runner.
type Namespaces struct{ Direct }

// New returns the user-namespace runner.
func New(cfg Config) (*Namespaces, error) {
	return nil, errors.New("the user-namespace sandbox is not available in this build")
}

// CleanStale removes workspaces left by a killed worker.
func CleanStale(cfg Config) error { return nil }
func Init()                       {}
