// Package containertest checks pkgfleet where it is deployed: the images
// that make images builds, run by a real Docker Engine. Its tests bring up
// the stack of docker/compose.yaml and build the examples through it, run
// the worker container under each row of container settings that
// docs/sandbox.md lists (Docker's defaults, Posit Package Manager's
// settings, unmasked /proc, the project's own seccomp profile) and check
// the sandbox tier each gives, run the sandbox's escape suite inside the
// worker container, and tie the Helm chart's worker settings to the row
// they claim.
//
// The tests build with the tag containers (make test-containers, which make
// test runs), so that go test ./... does not run them a second time. They
// own no product code: the sandbox lives in internal/sandbox, the images in
// docker/, and the unit checks of the Dockerfiles in deploy.
package containertest
