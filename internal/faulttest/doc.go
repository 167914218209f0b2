// Package faulttest holds pkgfleet's fault tests: real API and worker
// processes (this test binary re-executed as either), a redis-server of
// their own with AOF on, and real Python builds in the sandbox, while the
// test restarts Redis, starts the processes before Redis, or stops a worker
// or the API mid-build. Each test checks that nothing is lost: sources,
// builders, build records, queued builds and build slots.
//
// The SIGKILL-a-worker case with a fake recipe lives in internal/fleettest;
// this package kills real workers only to check what a kill leaves behind.
package faulttest
