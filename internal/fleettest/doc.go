// Package fleettest holds tests of pkgfleet as a fleet: the API, several
// worker servers with their own Redis connections and the poller, on a
// real redis-server, building real git repositories with a fake recipe
// (so they need neither R nor Python). They prove what no single package
// can: Git.BuildConcurrency across workers, cancel, webhooks, shutdown.
//
// It has no code of its own.
package fleettest
