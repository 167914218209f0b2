#!/bin/sh
# bench-sandbox.sh: time the launch of `/bin/true` three ways in one run:
# a bare exec, the pkgfleet user-namespace sandbox (Namespaces.Run), and
# bubblewrap with the same namespaces and mounts (when bwrap is installed),
# then print the ratios. Used by `make bench-sandbox`.
#
#   scripts/bench-sandbox.sh [runs]     (default 300 launches per variant)
set -eu
cd "$(dirname "$0")/.."
runs="${1:-300}"
out="$(go test -run '^$' -bench '^BenchmarkLaunch(Bare|Sandbox|Bwrap)$' \
	-benchtime "${runs}x" -count 1 ./internal/sandbox/)" || { echo "$out"; exit 1; }
echo "$out" | grep '^Benchmark'
echo "$out" | awk '
	/^BenchmarkLaunchBare/    { bare = $3 }
	/^BenchmarkLaunchSandbox/ { sbx = $3 }
	/^BenchmarkLaunchBwrap/   { bw = $3 }
	END {
		if (!bare || !sbx) { print "missing results"; exit 1 }
		printf "\nbare exec          %8.2f ms\n", bare / 1e6
		printf "sandbox            %8.2f ms   %5.1fx bare, overhead %.2f ms\n", sbx / 1e6, sbx / bare, (sbx - bare) / 1e6
		if (bw) {
			printf "bwrap              %8.2f ms   %5.1fx bare, overhead %.2f ms\n", bw / 1e6, bw / bare, (bw - bare) / 1e6
			printf "sandbox / bwrap    %8.2f\n", sbx / bw
		} else {
			print "bwrap              not installed (skipped)"
		}
	}'
