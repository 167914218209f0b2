// Package deploy holds no code: its tests check what pkgfleet ships for
// deployment — the Prometheus alert rules (promtool check and unit tests),
// the Grafana dashboard, the Helm chart in charts/pkgfleet (helm lint and
// helm template for several value sets, every rendered object decoded
// strictly into its Kubernetes type, the worker's sandbox security settings),
// the images and compose file in docker/, and the seccomp and AppArmor
// profiles in profiles/ (generated from, and checked against, the runtime's
// default; the AppArmor one compiled with apparmor_parser, never loaded).
//
// The tools come from outside the Go build: promtool from Debian's
// prometheus package, apparmor_parser from Debian 12's and Debian 13's
// apparmor packages, helm built once from the Go module proxy at a pinned
// version into the user cache directory (scripts/deploy-deps.sh installs them all).
// A missing tool skips its tests, except under CI=true, where it fails them.
package deploy
