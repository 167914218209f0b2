// Package deploy holds no code: its tests check what pkgfleet ships for
// deployment — the Prometheus alert rules (promtool check and unit tests),
// the Grafana dashboard, the Helm chart in charts/pkgfleet (helm lint and
// helm template for several value sets, every rendered object decoded
// strictly into its Kubernetes type, the worker's sandbox security settings)
// and the images and compose file in docker/.
//
// The tools come from outside the Go build: promtool from Debian's
// prometheus package, helm built once from the Go module proxy at a pinned
// version into the user cache directory (scripts/deploy-deps.sh does both).
// A missing tool skips its tests, except under CI=true, where it fails them.
package deploy
