#!/usr/bin/env bash
# Serving a layer from containerd's content store to a peer vs the daemon's own cache hit.
#
# One containerd holds an image with one random layer (default 1 GiB, imported with `ctr images import
# --no-unpack`, no registry). Node A (127.0.0.140) runs peerd on that containerd; node B (127.0.0.141) runs
# peerd without one. Measured with `curl -o /dev/null`, median of --trials:
#   store-sendfile  A answers a peer's GET of the whole layer from the blob file (--containerd-content-root)
#   store-grpc      the same with A reading over gRPC ReadContent (no content root)
#   peer-pull       B's first GET: chunks fetched from A's content store through B's engine
#   cache-hit       B's second GET: the layer from B's chunk cache (the baseline)
# Usage: sudo benchmarks/e2e/containerd_store.sh [--mib N] [--trials N]   (PEERD_BIN=path/to/peerd)
set -euo pipefail

MIB=1024
TRIALS=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mib) MIB="$2"; shift 2 ;;
    --trials) TRIALS="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ "$MIB" =~ ^[0-9]+$ && "$MIB" -ge 1 && "$MIB" -le 8192 ]] || { echo "--mib 1..8192" >&2; exit 2; }
[[ "$TRIALS" =~ ^[0-9]+$ && "$TRIALS" -ge 1 && "$TRIALS" -le 20 ]] || { echo "--trials 1..20" >&2; exit 2; }
PEERD_BIN="${PEERD_BIN:-build/release/peerd/daemon/peerd}"
[[ -x "$PEERD_BIN" ]] || { echo "no peerd binary at $PEERD_BIN" >&2; exit 2; }

A=127.0.0.140
B=127.0.0.141
REGISTRY=127.0.0.150:5000  # named in --hosts and the image name; never contacted for the layer
WORK="$(mktemp -d /tmp/peerd-bench-store.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# ---- containerd with the image ----
mkdir -p "$WORK/ctrd" "$WORK/layout/blobs/sha256"
cat > "$WORK/ctrd/config.toml" <<TOML
version = 2
root = "$WORK/ctrd/root"
state = "$WORK/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/ctrd/containerd.sock"
[ttrpc]
  address = "$WORK/ctrd/containerd.sock.ttrpc"
TOML
containerd --config "$WORK/ctrd/config.toml" > "$WORK/containerd.log" 2>&1 &
PIDS+=($!)
SOCK="$WORK/ctrd/containerd.sock"
for _ in $(seq 100); do ctr --address "$SOCK" version >/dev/null 2>&1 && break; sleep 0.1; done

head -c "${MIB}M" /dev/urandom > "$WORK/layer"
put_blob() {  # file -> prints "digest size"
  local hex size
  hex="$(sha256sum "$1" | cut -d' ' -f1)"; size="$(stat -c %s "$1")"
  mv "$1" "$WORK/layout/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}
read -r LAYER LAYER_SIZE < <(put_blob "$WORK/layer")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]}}' "$LAYER" > "$WORK/config"
read -r CONFIG CONFIG_SIZE < <(put_blob "$WORK/config")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$CONFIG" "$CONFIG_SIZE" "$LAYER" "$LAYER_SIZE" > "$WORK/manifest"
read -r MANIFEST MANIFEST_SIZE < <(put_blob "$WORK/manifest")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
  "$MANIFEST" "$MANIFEST_SIZE" > "$WORK/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$WORK/layout/oci-layout"
tar -C "$WORK/layout" -cf - . | ctr --address "$SOCK" images import --no-unpack --base-name "$REGISTRY/bench/big" - >/dev/null
rm -rf "$WORK/layout"

# ---- peerd ----
start_peerd() {  # name ip extra-flags...
  local name="$1" ip="$2"; shift 2
  mkdir -p "$WORK/$name/cache"
  "$PEERD_BIN" run --peer-plaintext --http-addr="$ip:5000" --router-addr="$ip:5003" --node-ip="$ip" --metrics-addr=off \
    --hosts="http://$REGISTRY" --cache-dir="$WORK/$name/cache" --cache-size=4GiB --cache-fsync=false \
    --log-level=warn --containerd-namespace=default "$@" > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://$ip:5000/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "peerd $name did not become ready: $(tail -5 "$WORK/$name.log")" >&2; exit 1
}
wait_offered() {
  for _ in $(seq 100); do
    curl -sfI -H "X-Peerd-Peer: bench" "http://$A:5000/v2/bench/big/blobs/$LAYER?ns=$REGISTRY" >/dev/null && return 0
    sleep 0.1
  done
  echo "node A does not offer the layer" >&2; exit 1
}
rate() {  # url headers... -> MB/s
  local url="$1"; shift
  curl -sf -o /dev/null -w '%{size_download} %{time_total}\n' "$@" "$url" | awk '{printf "%.0f\n", $1 / $2 / 1e6}'
}
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
peer_get() {
  rate "http://$A:5000/v2/bench/big/blobs/$LAYER?ns=$REGISTRY" -H "X-Peerd-Peer: bench" \
    -H "X-Peerd-Content-Length: $LAYER_SIZE" -H "Range: bytes=0-$((LAYER_SIZE - 1))"
}

CONTENT_ROOT="$WORK/ctrd/root/io.containerd.content.v1.content"
start_peerd a "$A" --containerd-socket="$SOCK" --containerd-content-root="$CONTENT_ROOT"
wait_offered
STORE_SENDFILE=$(for _ in $(seq "$TRIALS"); do peer_get; done | median)

start_peerd b "$B" --containerd-store=false --bootstrap="$A:5003"
sleep 1  # the DHT join and A's re-provide after it
PEER_PULL=$(rate "http://$B:5000/v2/bench/big/blobs/$LAYER?ns=$REGISTRY")
CACHE_HIT=$(for _ in $(seq "$TRIALS"); do rate "http://$B:5000/v2/bench/big/blobs/$LAYER?ns=$REGISTRY"; done | median)

kill "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true
start_peerd a2 "$A" --containerd-socket="$SOCK"
wait_offered
STORE_GRPC=$(for _ in $(seq "$TRIALS"); do peer_get; done | median)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "layer: ${MIB} MiB, median of $TRIALS"
echo "cache-hit (node B, second GET):        $CACHE_HIT MB/s"
echo "store-sendfile (peer GET from node A): $STORE_SENDFILE MB/s = $(ratio "$STORE_SENDFILE" "$CACHE_HIT") x cache-hit [target >= 0.9]"
echo "store-grpc (peer GET from node A):     $STORE_GRPC MB/s = $(ratio "$STORE_GRPC" "$CACHE_HIT") x cache-hit"
echo "peer-pull (node B, first GET):         $PEER_PULL MB/s"
