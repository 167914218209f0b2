// Package e2e holds pkgfleet's end-to-end tests: the real API, a real
// worker, a real redis-server, real git repositories and the real R and
// Python toolchains, wired together in one test process.
package e2e
