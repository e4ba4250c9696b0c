#!/usr/bin/env bash
# The README's main job (`make demo`): a registry, 3 peerd nodes and 3 containerd on this machine's loopback
# addresses (scripts/local-cluster.sh), the 200 MB test image pulled on node 1, then node 2, then node 3, and a
# table per node: pull time, MB/s, bytes each peerd fetched from peers and from upstream (its /metrics), the
# blob GETs the registry answered and the bytes it sent during that pull. Ends by checking that every node
# holds the same blobs and that each hashes to its digest (`ctr content get`). Root (containerd).
#
# Usage: scripts/demo.sh [--small] [--nodes N] [--dht-demo [-- DHT-DEMO-ARGS...]]
#   --small     the small image instead of the 200 MB one
#   --nodes N   nodes in the cluster (default 3)
#   --dht-demo  afterwards, also run the DHT demo on the deterministic harness (peerd-dht-demo; default
#               1000 nodes; arguments after `--` go to it, e.g. -- --nodes 200 --loss 0.1)
# Knobs: BUILD_DIR (default build/release), PEERD_BIN, and the LC_* variables of scripts/local-cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

small=0
nodes=3
dht_demo=0
dht_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --small) small=1; shift ;;
    --nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
    --nodes=*) nodes=${1#--nodes=}; shift ;;
    --dht-demo) dht_demo=1; shift ;;
    --) shift; dht_args=("$@"); break ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: must run as root (it installs packages and runs containerd): sudo $0 $*" >&2
  exit 1
fi

./scripts/install-deps.sh
build=${BUILD_DIR:-build/release}
export PEERD_BIN=${PEERD_BIN:-$build/peerd/daemon/peerd}
PEERD_BIN=$(realpath -m "$PEERD_BIN")
targets=()
[ -x "$PEERD_BIN" ] || targets+=(peerd)
[ $dht_demo = 0 ] || [ -x "$build/peerd/peerd-dht-demo" ] || targets+=(peerd-dht-demo)
if [ ${#targets[@]} -gt 0 ]; then
  echo "demo: building ${targets[*]} in $build"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  ninja -C "$build" "${targets[@]}" >/dev/null
fi

# shellcheck source=scripts/local-cluster.sh disable=SC1091
source scripts/local-cluster.sh
lc_init
lc_build_images
lc_start_registry || lc_die "registry did not start"
lc_push_images
lc_start_nodes "$nodes"
ref=$LC_BIG_REF
[ $small = 0 ] || ref=$LC_SMALL_REF
image_bytes=$(lc_image_bytes "$ref")

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
echo
echo "peerd local cluster: $nodes nodes on $(lc_node_addr 1)..$(lc_node_addr "$nodes"), registry $LC_REGISTRY"
echo "image $ref: $(mb "$image_bytes") MB of blobs, pulled on node 1, then 2, ... (ctr images pull, unpacked)"
echo
printf '%-5s %-12s %8s %8s %12s %15s %11s %12s\n' node address "pull s" "MB/s" "peers MB" "upstream MB" \
  "reg. GETs" "reg. MB sent"
total_bytes_before=$(lc_registry_blob_bytes)
for ((node = 1; node <= nodes; node++)); do
  gets_before=$(lc_registry_blob_gets)
  bytes_before=$(lc_registry_blob_bytes)
  seconds=$(lc_pull "$node" "$ref") || lc_die "pull on node $node failed (log: $LC_RUN_DIR/logs/pull$node.log)"
  peer=$(lc_metric "$node" peerd_bytes_fetched_total 'source="peer"')
  upstream=$(lc_metric "$node" peerd_bytes_fetched_total 'source="upstream"')
  gets=$(($(lc_registry_blob_gets) - gets_before))
  sent=$(($(lc_registry_blob_bytes) - bytes_before))
  printf '%-5s %-12s %8.2f %8.1f %12s %15s %11s %12s\n' "$node" "$(lc_node_addr "$node")" "$seconds" \
    "$(awk -v b="$image_bytes" -v s="$seconds" 'BEGIN { printf "%.1f", b / 1e6 / s }')" "$(mb "$peer")" \
    "$(mb "$upstream")" "$gets" "$(mb "$sent")"
done
total_sent=$(($(lc_registry_blob_bytes) - total_bytes_before))
echo
echo "peers MB, upstream MB: the node's peerd_bytes_fetched_total after its pull (cumulative: it includes"
echo "  chunks the node fetched for the other nodes' pulls). reg. GETs, reg. MB sent: blob GETs the registry"
echo "  answered and the bytes it sent during that node's pull (from its access log)."
echo "registry sent $(mb "$total_sent") MB for $nodes pulls of a $(mb "$image_bytes") MB image" \
  "($(awk -v t="$total_sent" -v i="$image_bytes" 'BEGIN { printf "%.2f", t / i }')x the image; 1.00x when peers" \
  "share every byte, ${nodes}.00x without peerd)"
blobs=$(lc_verify_content $(seq 1 "$nodes")) || lc_die "content differs between nodes"
echo "content check: the same $blobs blobs on all $nodes nodes, each hashing to its digest (ctr content get)"

if [ $dht_demo = 1 ]; then
  lc_teardown 0
  trap - EXIT INT TERM
  echo
  [ ${#dht_args[@]} -gt 0 ] || dht_args=(--nodes 1000)
  "$build/peerd/peerd-dht-demo" "${dht_args[@]}"
fi
