#!/usr/bin/env bash
# The README's main job. Until the daemon lands it runs the DHT demo on the deterministic harness:
# N nodes bootstrap from one seed, announce keys, look them up, and the demo prints hops and latency.
# Usage: scripts/demo.sh [--nodes N] [--seed S] [--lookups L] [--loss P]   (defaults: 1000 nodes)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
build=${BUILD_DIR:-build/release}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" peerd-dht-demo >/dev/null
exec "$build/peerd/peerd-dht-demo" "$@"
