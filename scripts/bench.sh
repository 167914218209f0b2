#!/bin/sh
# bench.sh: every pkgfleet benchmark in one run, each printed against its
# anchor measured in the same run (see BENCHMARKS.md). Used by `make bench`.
#
#   scripts/bench.sh [noop-builds]      (default 1000 no-op builds)
set -eu
cd "$(dirname "$0")/.."
builds="${1:-1000}"

# run TITLE TEST PACKAGE [VAR=VALUE...]: one go test case, its BENCH lines.
run() {
	title=$1 test=$2 pkg=$3
	shift 3
	echo
	echo "== $title"
	env "$@" go test -count 1 -timeout 90m -run "^$test\$" -v "$pkg" | sed -n 's/.*BENCH //p'
}

echo "== sandbox launch: bare exec vs pkgfleet sandbox vs bwrap"
bash scripts/bench-sandbox.sh
echo
echo "== the tool inside the sandbox: CPU per operation bare, under the seccomp filter alone, Landlock alone, the whole sandbox; the launcher's limit watch"
go test -count 1 -run '^$' -bench 'ToolSlowdown|WatcherCost' -benchtime 3x ./internal/sandbox/ | grep '^Benchmark'
echo
echo "== real builds bare and in the sandbox (python -m build, R CMD build of the examples): the tool's own CPU (tool-cpu-ms) and the whole run's, five counts of five builds per variant"
go test -count 5 -run '^$' -bench 'ToolBuild' -benchtime 5x ./internal/sandbox/ | grep '^Benchmark'

run "no-op builds without git: CPU and Redis commands per build, API and worker processes apart, vs raw asynq" \
	TestNoopBuildCost ./internal/fleettest/ PKGFLEET_LOAD_BUILDS="$builds"
run "push (run) -> build process start on an idle fleet, one push at a time" \
	TestPushToBuildProcessStart ./internal/fleettest/ PKGFLEET_PUSHES=100
run "an idle worker: Redis commands and CPU per second at the default task-check interval vs the old 50 ms" \
	TestIdleWorkerCost ./internal/fleettest/ PKGFLEET_BENCH=1
run "no-op builds through pkgfleet (API, registry, queue, slots, clone from the worker's object cache, record), then without the object cache (the before-figure), vs raw asynq" \
	TestNoopBuildLoad ./internal/fleettest/ PKGFLEET_LOAD_BUILDS="$builds"
run "example R package: API -> queue -> worker -> sandbox vs R CMD build (with the phases of the fleet's builds)" \
	TestBenchRPackageAgainstRCMDBuild ./internal/e2e/ PKGFLEET_BENCH=1
run "a generated R package with C code (300 R files, 150 C sources and headers, 100 Rd pages) vs R CMD build" \
	TestBenchLargeRPackageAgainstRCMDBuild ./internal/e2e/ PKGFLEET_BENCH=1
run "check: true on the example R package: a build without and with the check stage vs R CMD check --as-cran run directly" \
	TestBenchRCheckCost ./internal/e2e/ PKGFLEET_BENCH=1
run "R binaries: install.packages() of the generated C package from __linux__ (binary) vs from the source repository (compiling), and what binary: true costs its build" \
	TestBenchRBinaryInstallAgainstSource ./internal/e2e/ PKGFLEET_BENCH=1
run "example Python package: API -> queue -> worker -> sandbox vs python -m build (sdist and wheel, same interpreter)" \
	TestBenchPythonPackageAgainstPythonBuild ./internal/e2e/ PKGFLEET_BENCH=1
run "a generated Python package (300 modules in 10 subpackages, package data) vs python -m build" \
	TestBenchLargePythonPackageAgainstPythonBuild ./internal/e2e/ PKGFLEET_BENCH=1

run "artifact store: a build's store phase on the directory vs S3 (versitygw on loopback), 100 MiB up and down vs curl, streaming vs presigned redirect" \
	TestBenchStorePhase ./internal/store/ PKGFLEET_BENCH=1

echo
echo "== clone of one commit (4 and 700 files), as a build's checkout: wall and CPU with git's processes"
go test -run '^$' -bench '^BenchmarkClone$' -benchtime 20x ./internal/git/ | grep '^Benchmark'
echo
echo "== files-only clone of one commit (4 and 700 files) from a warm object cache vs fetched from the remote, same rounds: p50 wall and CPU with git's processes"
go test -run '^$' -bench '^BenchmarkCloneCached$' -benchtime 30x ./internal/git/ | grep '^Benchmark'

run "Redis durability: push -> start and Redis commands per build with WAIT (Sentinel) and without (the master's address), then master death -> first new build start over 5 failovers" \
	TestBenchDurability ./internal/faulttest/ PKGFLEET_BENCH=1 PKGFLEET_PUSHES=20
run "Redis failover at the issue's size: 40 Python builds of 10s on 2 workers (4 slots), the master killed with SIGKILL mid-burst" \
	TestMasterKilledMidBurstLosesNoAcknowledgedBuildAndRunsOneCopy ./internal/faulttest/ PKGFLEET_FAILOVER_BURST=40x10
run "outbound webhooks: 200 builds finished at once, one hook: finish -> delivery and Redis commands per delivery vs plain POSTs" \
	TestBenchOutboundWebhooks ./internal/api/ PKGFLEET_BENCH=1
run "poller: 1000 builders of a local repository, one poller, 10s interval" \
	TestManyBuildersAreAllPolled ./internal/poller/ PKGFLEET_POLL_BUILDERS=1000
# About 9 minutes: 10,000 builders take three 60 s rounds (the steady one
# is measured), after 1000 builders polled the way it was before (git
# ls-remote per builder) for the comparison.
run "poller: 10,000 builders over 1000 remotes (half local, half a loopback smart-HTTP server), 60s interval; before: 1000 builders over 100 remotes with git ls-remote per builder" \
	TestPollingManyBuildersListsEachRemoteOncePerRound ./internal/poller/ PKGFLEET_POLL_BUILDERS=10000 PKGFLEET_POLL_REMOTES=1000 PKGFLEET_POLL_INTERVAL=60 PKGFLEET_POLL_BEFORE=1000
echo
echo "== listing one local repository: git ls-remote vs reading its ref files vs a persistent git upload-pack (fresh=0: it misses a branch created after it started)"
go test -run '^$' -bench '^BenchmarkListRefs$' -benchtime 200x ./internal/git/ | grep '^Benchmark'
run "Redis memory per finished build: its log in Redis (before) vs moved into the store (after), 200 builds with a 16 KiB log" \
	TestAFinishedBuildCostsARecordNotItsLog ./internal/retention/
run "Redis memory of a fleet through 1,000,000 builds (generated records, 1000 builders, 100 days, a retention pass a day; about 20-40 min on 2 cores), flat after the horizon" \
	TestFleetMemoryStaysFlatAfterTheRetentionHorizon ./internal/retention/ PKGFLEET_RETENTION_BUILDS=1000000
# About 20 s: 100,000 records written, five listings read them all.
run "an index listing of one source (500 served) among 100,000 build records: before (every build read and filtered) and after (the source's servable builds), and the first listing's one-time fill of a store written before" \
	TestBenchIndexListingPerSource ./internal/index/ PKGFLEET_BENCH=1 PKGFLEET_INDEX_BUILDS=100000
run "builds listing of one source (GET /api/v1/builds?source=, 100 builds) among 100,000 records: from the source's own list (a tree without it reads every build)" \
	TestBenchSourceBuildsListing ./internal/registry/ PKGFLEET_BENCH=1 PKGFLEET_LIST_BUILDS=100000
run "Redis CPU per build record write (running, succeeded, dropped) with the served keys kept in the same scripts (run the same test on a tree before them for the anchor)" \
	TestBenchBuildWriteCost ./internal/registry/ PKGFLEET_BENCH=1

# About 1.5 minutes: three network namespaces (needs root), 10,000 builders, a
# burst of 2000 no-op builds at 1 ms and then at 20 ms one-way between hosts
# (a user-space relay: this kernel has no netem).
run "a fleet of hosts simulated: Redis and 2 API replicas on one network namespace, 2x4 worker processes on two others, 10,000 builders, a burst of 2000 no-op builds at 1 ms then 20 ms one-way" \
	TestFleetOfHostsTakesABurst ./internal/fleettest/ PKGFLEET_HOSTS_BUILDERS=10000 PKGFLEET_HOSTS_BUILDS=2000 PKGFLEET_HOSTS_DELAYS=1ms,20ms
echo
echo "== head of line: 4 worker slots, builder A (limit 1) with 50 builds queued ahead of builder B's 20"
go test -count 1 -run '^$' -bench '^BenchmarkHeadOfLine$' -benchtime 1x ./internal/fleettest/ |
	awk '/^BenchmarkHeadOfLine/ { printf "head-of-line B-finish/ideal=%s B-first-start=%ss build=%ss slot-use=%s%%\n", $5, $7, $9, $11 }'
