#!/usr/bin/env bash
# Builds every libFuzzer target (peerd/core/fuzz/*_fuzz.cc) with clang and runs each for FUZZ_SECONDS, seeded
# from peerd/core/fuzz/corpus/<name>/ when present. Exits non-zero when a fuzzer finds a failing input.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${JOBS:-$(nproc)}
build_root=${BUILD_ROOT:-$root/build}
fuzz_seconds=${FUZZ_SECONDS:-60}

CC=clang CXX=clang++ cmake -S . -B "$build_root/fuzz" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPEERD_FUZZ=ON \
  -DPEERD_BENCHMARKS=OFF -DPEERD_WERROR=ON >/dev/null
ninja -C "$build_root/fuzz" -j "$jobs" fuzzers
mapfile -t fuzzers < <(find "$build_root/fuzz/peerd/core" -maxdepth 1 -type f -name '*_fuzz' -perm -u+x | sort)
[ ${#fuzzers[@]} -gt 0 ] || { echo "no fuzz targets were built" >&2; exit 1; }
for fuzzer in "${fuzzers[@]}"; do
  name=$(basename "$fuzzer")
  work=$(mktemp -d)
  seeds="$root/peerd/core/fuzz/corpus/${name%_fuzz}"
  [ -d "$seeds" ] && cp -r "$seeds/." "$work/"
  echo "-- $name"
  if ! "$fuzzer" -max_total_time="$fuzz_seconds" -print_final_stats=1 -artifact_prefix="$work/" "$work" \
      >"$work/log" 2>&1; then
    tail -40 "$work/log"
    echo "$name found a failing input; artifacts in $work" >&2
    exit 1
  fi
  grep -E 'stat::number_of_executed_units|Done ' "$work/log" | tail -2
  rm -rf "$work"
done

