#!/usr/bin/env bash
# The README's test command: installs dependencies, builds everything with warnings as errors, and runs
#   1. a formatting check (clang-format),
#   2. the unit tests (ctest label `unit`),
#   3. the integration tests (label `integration`): real docker-registry, nginx, containerd + ctr and several
#      peerd processes on 127.0.0.x; they start and stop every service themselves (containerd needs root),
#      then a 3-node cluster on network namespaces running the random and ctr workloads (kind/local),
#   4. the simulator tests (label `sim`): ns-3 packet-level and flow-level scenarios,
#   5. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer,
#   6. each libFuzzer target for a bounded time (clang),
# and builds (does not run) the benchmarks. Exits non-zero on the first failure.
# Knobs: FUZZ_SECONDS (default 30 in CI, 10 otherwise), JOBS (default: nproc), BUILD_ROOT (default ./build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

jobs=${JOBS:-$(nproc)}
build_root=${BUILD_ROOT:-$root/build}
if [ "${CI:-}" = "true" ]; then fuzz_seconds=${FUZZ_SECONDS:-30}; else fuzz_seconds=${FUZZ_SECONDS:-10}; fi

step() { printf '\n==== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

step "dependencies"
./scripts/install-deps.sh

step "format check"
mapfile -t sources < <(git ls-files '*.h' '*.cc' 2>/dev/null || find peerd benchmarks simulator workloads -name '*.h' -o -name '*.cc')
clang-format --dry-run --Werror "${sources[@]}"
echo "clang-format: ${#sources[@]} files clean"

step "release build (-Werror)"
cmake -S . -B "$build_root/release" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPEERD_WERROR=ON -DPEERD_REQUIRE_NS3=ON >/dev/null
ninja -C "$build_root/release" -j "$jobs"

step "packaging tests (helm chart, kind scripts, manifests, Dockerfile; no cluster)"
PEERD_BINARY="$build_root/release/peerd/daemon/peerd" /usr/bin/python3 charts/tests/chart_test.py
PYTHON=/usr/bin/python3 PEERD_BINARY="$build_root/release/peerd/daemon/peerd" kind/tests/run.sh

step "unit tests"
(cd "$build_root/release" && ctest -L unit --output-on-failure -j "$jobs" --timeout 300)

step "integration tests (registry, nginx, containerd, peerd clusters on 127.0.0.x)"
(cd "$build_root/release" && ctest -L integration --output-on-failure -j 1 --timeout 900)

step "local cluster (network namespaces: 3 nodes, containerd + peerd, random and ctr workloads)"
PEERD_BIN="$build_root/release/peerd/daemon/peerd" WORKLOADS_DIR="$build_root/release/workloads" \
  timeout 900 kind/local/cluster.sh all --nodes 3 --image small

step "simulator tests (ns-3)"
(cd "$build_root/release" && ctest -L sim --output-on-failure -j "$jobs" --timeout 900)

step "demo smoke run"
"$build_root/release/peerd/peerd-dht-demo" --nodes 200 --lookups 200

step "ASan + UBSan build and unit tests"
# The simulator's tests run in the release build above; its ns-3 side is too slow to build twice in CI time.
# Unit tests only: the integration tests' binaries are not built here.
cmake -S . -B "$build_root/asan" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPEERD_WERROR=ON -DPEERD_SANITIZE=ON \
  -DPEERD_BENCHMARKS=OFF -DPEERD_SIMULATOR=OFF -DPEERD_INTEGRATION_TESTS=OFF >/dev/null
ninja -C "$build_root/asan" -j "$jobs"
(cd "$build_root/asan" && PEERD_TEST_SCALE=small ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest -L unit --output-on-failure -j "$jobs" --timeout 300)

step "fuzzers (${fuzz_seconds}s each)"
FUZZ_SECONDS=$fuzz_seconds BUILD_ROOT=$build_root JOBS=$jobs ./scripts/fuzz.sh

step "done"
echo "all checks passed"
