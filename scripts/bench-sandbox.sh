#!/bin/sh
# bench-sandbox.sh: time the launch of `/bin/true` three ways in one run:
# a bare exec, the pkgfleet user-namespace sandbox (Namespaces.Run), and
# bubblewrap with the same namespaces and mounts (when bwrap is installed),
# then print the ratios. Used by `make bench-sandbox`.
#
#   scripts/bench-sandbox.sh [runs] [count]
#       (default 300 launches per variant, best of 3 counts)
set -eu
cd "$(dirname "$0")/.."
runs="${1:-300}"
count="${2:-3}"
out="$(go test -run '^$' -bench '^BenchmarkLaunch(Bare|Sandbox|Bwrap)$' \
	-benchtime "${runs}x" -count "$count" ./internal/sandbox/)" || { echo "$out"; exit 1; }
echo "$out" | grep '^Benchmark'
# The best of the counts for each variant, in wall time and in CPU time (the
# benchmark process, everything it reaped, and the sandbox's launcher with
# every build process it reaped), which a machine shared with
# other work distorts far less.
echo "$out" | awk '
	function keep(name, wall, cpu) {
		if (!(name in w) || wall < w[name]) w[name] = wall
		if (!(name in c) || cpu < c[name]) c[name] = cpu
	}
	/^BenchmarkLaunchBare/    { keep("bare", $3, $5) }
	/^BenchmarkLaunchSandbox/ { keep("sbx", $3, $5) }
	/^BenchmarkLaunchBwrap/   { keep("bw", $3, $5) }
	END {
		if (!("bare" in w) || !("sbx" in w)) { print "missing results"; exit 1 }
		printf "\n                      wall          CPU\n"
		printf "bare exec          %8.2f ms  %8.2f ms\n", w["bare"] / 1e6, c["bare"]
		printf "sandbox            %8.2f ms  %8.2f ms   %5.1fx bare (wall)\n", w["sbx"] / 1e6, c["sbx"], w["sbx"] / w["bare"]
		if ("bw" in w) {
			printf "bwrap              %8.2f ms  %8.2f ms   %5.1fx bare (wall)\n", w["bw"] / 1e6, c["bw"], w["bw"] / w["bare"]
			printf "sandbox / bwrap    %8.2f     %8.2f\n", w["sbx"] / w["bw"], c["sbx"] / c["bw"]
		} else {
			print "bwrap              not installed (skipped)"
		}
	}'
