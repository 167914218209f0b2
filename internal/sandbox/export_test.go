//go:build linux

package sandbox

// PauseKeepalives stops (or resumes) the worker side of the dead man's
// switch for every build of n, as a stalled worker would.
func (n *Namespaces) PauseKeepalives(paused bool) { n.keepalivesPaused.Store(paused) }
