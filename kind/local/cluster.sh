#!/usr/bin/env bash
# kind/local: the kind test flow offline, on this machine (CI too), with network namespaces instead of Docker.
# Every node is a network namespace on a private bridge (the bridge itself lives in a namespace of its own, so
# the host's network is never touched); the registry (docker-registry) and the blob origin (nginx) share one more
# namespace whose link can be capped with tbf. Each node runs its own containerd and peerd. Every client (curl,
# skopeo, ctr, the workloads) runs inside a namespace: nothing in the root namespace sends to these addresses.
# Root only. Every wait is bounded.
#
# Usage: kind/local/cluster.sh COMMAND [flags]
#   create       namespaces + bridge, registry (+ tbf cap), test images pushed, one containerd per node
#   deploy       (re)start one peerd per node with an empty cache; wait until each joined the DHT (/readyz)
#   test-random  nginx origin serving a random file; peerd-random --mode p2p --verify on every node at once
#                (KL_RANDOM_MODE=both also reads straight from the origin, for upstream speed lines)
#   test-ctr     peerd-ctr on node 1, 2, ... in turn (pulls through containerd -> peerd); node 2+ must get
#                bytes from peers
#   delete       kill every process group, unmount, delete the namespaces (veths and bridge go with them)
#   all          create, deploy, test-random, test-ctr; delete on exit, failure or Ctrl-C
# Flags (create, all): --nodes N (3), --registry-mbit M (no cap). Flags (test-ctr, all): --image small|big|REF
# (big). A stale cluster from an earlier run is deleted by create.
#
# Environment: PEERD_BIN (build/release/peerd/daemon/peerd), WORKLOADS_DIR (build/release/workloads: peerd-random,
# peerd-ctr), KL_WORK_DIR (/var/tmp/peerd-local-cluster/netns; the test images are cached by
# scripts/local-cluster.sh in /var/tmp/peerd-local-cluster/images), KL_NET (10.77.50: the private /24; registry
# .10, node N .(10+N)), KL_NS_PREFIX (peerd-lc: namespace names), KL_BLOB_MB (256: the random test's file),
# KL_READS_PER_BLOB (5), KL_VERIFY_READS (2), KL_SEED (random), KL_WAIT_S (60: each readiness wait),
# KL_TEST_TIMEOUT_S (600: each workload run), KL_PEERD_ARGS (extra peerd flags), KL_KEEP_RUN=1 (keep logs on
# delete).
set -euo pipefail

kl_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
kl_repo=$(cd -- "$kl_dir/../.." && pwd)
PEERD_BIN=${PEERD_BIN:-$kl_repo/build/release/peerd/daemon/peerd}
WORKLOADS_DIR=${WORKLOADS_DIR:-$kl_repo/build/release/workloads}
KL_WORK_DIR=${KL_WORK_DIR:-/var/tmp/peerd-local-cluster/netns}
KL_RUN_DIR=$KL_WORK_DIR/run
KL_NET=${KL_NET:-10.77.50}
KL_NS_PREFIX=${KL_NS_PREFIX:-peerd-lc}
KL_BLOB_MB=${KL_BLOB_MB:-256}
KL_READS_PER_BLOB=${KL_READS_PER_BLOB:-5}
KL_VERIFY_READS=${KL_VERIFY_READS:-2}
KL_WAIT_S=${KL_WAIT_S:-60}
KL_TEST_TIMEOUT_S=${KL_TEST_TIMEOUT_S:-600}
KL_STOP_TENTHS_MAX=50 # SIGTERM grace before SIGKILL: 5 s
KL_NODES_MAX=50       # addresses .11 .. .60
KL_HTTP_PORT=5000
KL_ROUTER_PORT=5003
KL_ORIGIN_PORT=8080
KL_REGISTRY_ADDR=$KL_NET.10
declare -a kl_peer_mark=() kl_upstream_mark=()
KL_REGISTRY=$KL_REGISTRY_ADDR:5000
NS_BRIDGE=$KL_NS_PREFIX-br
NS_REGISTRY=$KL_NS_PREFIX-reg

# The image cache and its builder (lc_build_images) come from scripts/local-cluster.sh; nothing else of it runs.
LC_WORK_DIR=${LC_WORK_DIR:-/var/tmp/peerd-local-cluster}
# shellcheck disable=SC1091  # sourced by path at run time (scripts/local-cluster.sh)
source "$kl_repo/scripts/local-cluster.sh"

kl_log() { printf 'local: %s\n' "$*" >&2; }
kl_die() {
  kl_log "error: $*"
  exit 1
}

kl_ns() { echo "$KL_NS_PREFIX-n$1"; }
kl_addr() { echo "$KL_NET.$((10 + $1))"; }
kl_node_dir() { echo "$KL_RUN_DIR/node$1"; }
# kl_in NS COMMAND...: runs COMMAND inside namespace NS (the only way this script talks to a cluster address).
kl_in() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

kl_elapsed() { echo "$((SECONDS - $1))s"; }

kl_require_root() {
  [ "$(id -u)" -eq 0 ] || kl_die "must run as root (network namespaces, containerd): sudo $0 ${kl_args:-}"
}

kl_require_tools() {
  local tool missing=()
  for tool in ip tc setsid flock timeout curl "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] || kl_die "missing ${missing[*]}: run scripts/install-deps.sh"
}

kl_require_binary() { [ -x "$1" ] || kl_die "no $2 at $1 (build it, or set $3)"; }

# ---- state: settings of the current cluster, read by every later command ----

kl_load_state() {
  [ -f "$KL_RUN_DIR/state" ] || kl_die "no local cluster (run: $0 create)"
  # shellcheck source=/dev/null
  source "$KL_RUN_DIR/state"
}

# ---- processes: each in its own process group (setsid), pid in run/pids/NAME, output in run/logs/NAME.log ----

kl_spawn() {
  local name=$1
  shift
  # The lock's descriptor is closed in the child: a daemon must not hold the lock after this command exits.
  setsid "$@" >"$KL_RUN_DIR/logs/$name.log" 2>&1 </dev/null {kl_lock_fd}>&- &
  echo $! >"$KL_RUN_DIR/pids/$name"
}

kl_pid() { cat "$KL_RUN_DIR/pids/$1" 2>/dev/null; }

kl_alive() {
  local pid
  pid=$(kl_pid "$1") || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# kl_stop NAME...: SIGTERM to each process group, 5 s grace for all of them together, then SIGKILL. Every
# process started here names the run directory in its arguments; a pid that does not (reused since a crashed
# run) belongs to someone else and is left alone.
kl_stop() {
  local name pid tenth pids=() alive
  for name in "$@"; do
    pid=$(kl_pid "$name") || continue
    rm -f "$KL_RUN_DIR/pids/$name"
    if [ -z "$pid" ] || ! tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$KL_RUN_DIR"; then continue; fi
    kill -TERM -- -"$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for ((tenth = 0; tenth < KL_STOP_TENTHS_MAX; tenth++)); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    kill -KILL -- -"$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# kl_wait_http NS NAME URL [CURL_FLAGS...]: polls URL from inside NS until curl succeeds, while NAME is alive;
# KL_WAIT_S at most.
kl_wait_http() {
  local ns=$1 name=$2 url=$3 deadline=$((SECONDS + KL_WAIT_S))
  shift 3
  while [ $SECONDS -lt $deadline ]; do
    kl_in "$ns" curl -s -o /dev/null --max-time 1 "$@" "$url" && return 0
    kl_alive "$name" || break
    sleep 0.2
  done
  kl_log "$name did not come up ($url); last log lines:"
  tail -n 20 "$KL_RUN_DIR/logs/$name.log" >&2 || true
  return 1
}

# kl_stop_matching PREFIX...: kl_stop on every pid file whose name starts with one of the prefixes ("": all).
kl_stop_matching() {
  local prefix file names=()
  for prefix in "$@"; do
    for file in "$KL_RUN_DIR/pids/$prefix"*; do [ ! -f "$file" ] || names+=("${file##*/}"); done
  done
  kl_stop "${names[@]}"
}

kl_our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$KL_NS_PREFIX-(br|reg|n[0-9]+)\$" || true; }

# Kills every process of this cluster (pid files first, then whatever still runs in one of its namespaces),
# unmounts what containerd left under run/, deletes the namespaces (their veths and the bridge go with them).
kl_teardown() {
  local ns pid count=0 mount_point
  if [ -d "$KL_RUN_DIR/pids" ]; then
    # Workloads first, then everything else at once.
    kl_stop_matching random ctr
    kl_stop_matching ''
  fi
  for ns in $(kl_our_namespaces); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  if [ -d "$KL_RUN_DIR" ]; then
    while read -r mount_point; do
      umount -l "$mount_point" 2>/dev/null || true
      count=$((count + 1))
      [ $count -lt 1000 ] || break
    done < <(awk -v dir="$KL_RUN_DIR" 'index($2, dir) == 1 {print $2}' /proc/mounts | sort -r)
  fi
  for ns in $(kl_our_namespaces); do ip netns del "$ns" 2>/dev/null || kl_log "could not delete namespace $ns"; done
  return 0
}

# ---- create ----

kl_create_network() {
  local nodes=$1 mbit=$2 node burst_kb
  ip netns add "$NS_BRIDGE"
  ip -n "$NS_BRIDGE" link add br0 type bridge
  ip -n "$NS_BRIDGE" link set br0 up
  kl_attach "$NS_REGISTRY" preg "$KL_REGISTRY_ADDR"
  for ((node = 1; node <= nodes; node++)); do
    kl_attach "$(kl_ns "$node")" "p$node" "$(kl_addr "$node")"
  done
  if [ -n "$mbit" ]; then
    # tbf on the registry's egress: everything the registry and the origin send is capped. The bucket must
    # hold at least one timer tick of traffic at the rate (rate / 250 covers HZ=250).
    burst_kb=$((mbit / 2 > 256 ? mbit / 2 : 256))
    kl_in "$NS_REGISTRY" tc qdisc add dev veth0 root tbf rate "${mbit}mbit" burst "${burst_kb}kb" latency 50ms
    kl_log "registry link capped at $mbit Mbit/s (tbf, burst ${burst_kb} kB)"
  fi
}

# kl_attach NS BRIDGE_PORT ADDR: namespace NS with veth0 (ADDR/24) on the bridge.
kl_attach() {
  local ns=$1 port=$2 addr=$3
  ip netns add "$ns"
  ip link add veth0 netns "$ns" type veth peer name "$port" netns "$NS_BRIDGE"
  ip -n "$NS_BRIDGE" link set "$port" master br0
  ip -n "$NS_BRIDGE" link set "$port" up
  ip -n "$ns" addr add "$addr/24" dev veth0
  ip -n "$ns" link set veth0 up
  ip -n "$ns" link set lo up
}

kl_start_registry() {
  local dir=$KL_RUN_DIR/registry
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log: {level: info, formatter: text, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}
http: {addr: $KL_REGISTRY}
EOF
  kl_spawn registry ip netns exec "$NS_REGISTRY" docker-registry serve "$dir/config.yml"
  kl_wait_http "$NS_REGISTRY" registry "http://$KL_REGISTRY/v2/" || kl_die "registry did not start"
}

kl_build_images() {
  mkdir -p "$LC_IMAGES_DIR"
  [ -f "$LC_IMAGES_DIR/oci.$LC_BIG_MB.done" ] && return 0
  # Built once into the cache scripts/local-cluster.sh shares; its lock keeps two builders apart.
  (
    flock -w 600 9 || kl_die "timed out waiting for $LC_WORK_DIR/lock to build the images"
    lc_build_images
  ) 9>"$LC_WORK_DIR/lock"
}

kl_push_images() {
  local tag
  for tag in small big; do
    kl_in "$NS_REGISTRY" timeout 300 skopeo --insecure-policy copy -q --dest-tls-verify=false \
      "oci:$LC_IMAGES_DIR/oci:$tag" "docker://$KL_REGISTRY/test/$tag:latest" >>"$KL_RUN_DIR/logs/skopeo.log" 2>&1 ||
      kl_die "skopeo push of $tag failed: $(tail -n 3 "$KL_RUN_DIR/logs/skopeo.log")"
  done
}

kl_start_containerd() {
  local node=$1 dir sock deadline=$((SECONDS + KL_WAIT_S))
  dir=$(kl_node_dir "$node")
  sock=$dir/containerd.sock
  mkdir -p "$dir/root" "$dir/state" "$dir/certs.d"
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
EOF
  kl_spawn "containerd$node" ip netns exec "$(kl_ns "$node")" containerd --config "$dir/containerd.toml"
  while [ $SECONDS -lt $deadline ]; do
    timeout 5 ctr --address "$sock" version >/dev/null 2>&1 && return 0
    kl_alive "containerd$node" || break
    sleep 0.2
  done
  tail -n 20 "$KL_RUN_DIR/logs/containerd$node.log" >&2 || true
  kl_die "containerd of node $node did not come up"
}

cmd_create() {
  local nodes=$1 mbit=$2 node start=$SECONDS
  kl_require_tools docker-registry umoci skopeo containerd ctr
  if [ "$nodes" -lt 1 ] || [ "$nodes" -gt $KL_NODES_MAX ]; then kl_die "--nodes must be 1..$KL_NODES_MAX"; fi
  if [ -n "$mbit" ] && ! [[ $mbit =~ ^[1-9][0-9]*$ ]]; then kl_die "--registry-mbit must be a positive integer"; fi
  if [ -d "$KL_RUN_DIR" ] || [ -n "$(kl_our_namespaces)" ]; then
    kl_log "deleting a stale cluster from an earlier run"
    kl_teardown
  fi
  rm -rf "$KL_RUN_DIR"
  mkdir -p "$KL_RUN_DIR"/{pids,logs}
  cat >"$KL_RUN_DIR/state" <<EOF
KL_NODES=$nodes
KL_REGISTRY_MBIT=$mbit
EOF
  kl_create_network "$nodes" "$mbit"
  kl_build_images
  kl_start_registry
  kl_push_images
  for ((node = 1; node <= nodes; node++)); do kl_start_containerd "$node"; done
  echo "created: registry http://$KL_REGISTRY (namespace $NS_REGISTRY${mbit:+, capped at $mbit Mbit/s}), $nodes nodes" \
    "$(kl_addr 1)..$(kl_addr "$nodes") (namespaces $(kl_ns 1)..), containerd per node, images test/small and" \
    "test/big pushed ($(kl_elapsed "$start"))"
}

# ---- deploy ----

kl_start_peerd() {
  local node=$1 addr dir bootstrap="" peer extra=()
  addr=$(kl_addr "$node")
  dir=$(kl_node_dir "$node")
  rm -rf "$dir/cache"
  mkdir -p "$dir/cache" "$dir/certs.d"
  for ((peer = 1; peer <= KL_NODES; peer++)); do
    bootstrap+="${bootstrap:+,}$(kl_addr "$peer"):$KL_ROUTER_PORT"
  done
  # shellcheck disable=SC2206 # word splitting of extra flags is intended
  [ -n "${KL_PEERD_ARGS:-}" ] && extra+=($KL_PEERD_ARGS)
  # --allowed-upstreams: the registry's host on any port, so /blobs/ may read the origin (port 8080) too; a
  # --hosts entry alone allows only its own port.
  kl_spawn "peerd$node" ip netns exec "$(kl_ns "$node")" "$PEERD_BIN" run \
    --http-addr="$addr:$KL_HTTP_PORT" --router-addr="$addr:$KL_ROUTER_PORT" --metrics-addr=off \
    --hosts="http://$KL_REGISTRY" --allowed-upstreams="$KL_REGISTRY_ADDR" \
    --cache-dir="$dir/cache" --cache-size=2GiB --cache-fsync=false --bootstrap="$bootstrap" \
    --node-ip="$addr" --node-name="node$node" --log-level=info \
    --add-mirror-configuration --containerd-hosts-config-path="$dir/certs.d" --peer-plaintext \
    --containerd-socket="$dir/containerd.sock" --containerd-namespace=default \
    --containerd-content-root="$dir/root/io.containerd.content.v1.content" "${extra[@]}"
}

cmd_deploy() {
  local node start=$SECONDS peers
  kl_require_binary "$PEERD_BIN" peerd PEERD_BIN
  kl_stop_matching peerd
  for ((node = 1; node <= KL_NODES; node++)); do kl_start_peerd "$node"; done
  echo "waiting for every peerd to join the DHT (/readyz, timeout ${KL_WAIT_S}s each)"
  for ((node = 1; node <= KL_NODES; node++)); do
    kl_wait_http "$(kl_ns "$node")" "peerd$node" "http://$(kl_addr "$node"):$KL_HTTP_PORT/readyz" -f ||
      kl_die "peerd of node $node is not ready"
    peers=$(grep -m1 '"p2p connected"' "$KL_RUN_DIR/logs/peerd$node.log" | grep -o '"peers":[0-9]*' | cut -d: -f2)
    echo "node$node: peerd ready on $(kl_addr "$node"):$KL_HTTP_PORT (p2p connected, peers ${peers:-?})"
  done
  echo "deployed: $KL_NODES of $KL_NODES peerd ready ($(kl_elapsed "$start"))"
}

# ---- tests ----

# kl_metric_sum NODE NAME LABEL: sum of NAME series with LABEL from node's /metrics (0 when unreachable).
kl_metric_sum() {
  local node=$1 name=$2 label=$3
  kl_in "$(kl_ns "$node")" curl -fs --max-time 2 "http://$(kl_addr "$node"):$KL_HTTP_PORT/metrics" 2>/dev/null |
    awk -v n="$name" -v l="$label" 'index($1, n "{") == 1 && index($1, l) > 0 { sum += $NF }
      END { printf "%.0f\n", sum }'
}

# kl_p2p_mark: remembers every node's peerd_bytes_fetched_total (from peers, from upstream) as the baseline of
# the next kl_p2p_bytes.
kl_p2p_mark() {
  local node
  for ((node = 1; node <= KL_NODES; node++)); do
    kl_peer_mark[node]=$(kl_metric_sum "$node" peerd_bytes_fetched_total 'source="peer"')
    kl_upstream_mark[node]=$(kl_metric_sum "$node" peerd_bytes_fetched_total 'source="upstream"')
  done
}

# kl_p2p_bytes: per node, bytes its peerd fetched from peers and from upstream since kl_p2p_mark; prints the
# table and sets kl_total_peer and kl_total_upstream (call it in this shell, not in $(...)).
kl_p2p_bytes() {
  local node peer upstream
  kl_total_peer=0
  kl_total_upstream=0
  for ((node = 1; node <= KL_NODES; node++)); do
    peer=$(($(kl_metric_sum "$node" peerd_bytes_fetched_total 'source="peer"') - ${kl_peer_mark[node]:-0}))
    upstream=$(($(kl_metric_sum "$node" peerd_bytes_fetched_total 'source="upstream"') - ${kl_upstream_mark[node]:-0}))
    printf 'node%-3s peerd fetched %12s B from peers, %12s B from upstream\n' "$node" "$peer" "$upstream"
    kl_total_peer=$((kl_total_peer + peer))
    kl_total_upstream=$((kl_total_upstream + upstream))
  done
}

# kl_wait_run NAME: waits for the background run NAME (bounded by its own timeout); its status in kl_status.
# Runs in this shell (a subshell cannot wait for this shell's children).
kl_wait_run() {
  local pid
  pid=$(kl_pid "$1")
  kl_status=0
  wait "$pid" 2>/dev/null || kl_status=$?
  rm -f "$KL_RUN_DIR/pids/$1"
}

kl_start_origin() {
  local dir=$KL_RUN_DIR/origin
  mkdir -p "$dir/www"
  if [ "$(stat -c %s "$dir/www/blob.bin" 2>/dev/null || echo 0)" -ne $((KL_BLOB_MB * 1048576)) ]; then
    head -c "${KL_BLOB_MB}M" /dev/urandom >"$dir/www/blob.bin"
  fi
  kl_alive origin && return 0
  lc_write_nginx_conf "$dir" "$KL_REGISTRY_ADDR:$KL_ORIGIN_PORT" "$dir/www"
  kl_spawn origin ip netns exec "$NS_REGISTRY" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
  kl_wait_http "$NS_REGISTRY" origin "http://$KL_REGISTRY_ADDR:$KL_ORIGIN_PORT/blob.bin" -I || kl_die "nginx origin did not start"
}

kl_origin_bytes() {
  awk '{ for (i = 1; i < NF; i++) if ($i ~ /HTTP\/1\.[01]"$/) { sum += $(i + 2); break } } END { printf "%.0f\n", sum }' \
    "$KL_RUN_DIR/origin/access.log" 2>/dev/null || echo 0
}

cmd_test_random() {
  local node failed=0 origin_before origin_after start=$SECONDS bin seed=()
  bin=$WORKLOADS_DIR/peerd-random
  kl_require_binary "$bin" peerd-random WORKLOADS_DIR
  command -v nginx >/dev/null 2>&1 || kl_die "nginx not installed: run scripts/install-deps.sh"
  kl_start_origin
  echo "http://$KL_REGISTRY_ADDR:$KL_ORIGIN_PORT/blob.bin" >"$KL_RUN_DIR/origin/blobs.txt"
  origin_before=$(kl_origin_bytes)
  kl_p2p_mark
  echo "test-random: $KL_NODES nodes read ${KL_BLOB_MB} MiB http://$KL_REGISTRY_ADDR:$KL_ORIGIN_PORT/blob.bin" \
    "through their peerd (/blobs/), ${KL_READS_PER_BLOB} reads, ${KL_VERIFY_READS} verified (timeout ${KL_TEST_TIMEOUT_S}s)"
  for ((node = 1; node <= KL_NODES; node++)); do
    seed=()
    [ -z "${KL_SEED:-}" ] || seed=(--seed "$((KL_SEED + node))")
    kl_spawn "random$node" timeout -k 5 "$KL_TEST_TIMEOUT_S" ip netns exec "$(kl_ns "$node")" "$bin" \
      --blobs-file "$KL_RUN_DIR/origin/blobs.txt" --peerd "http://$(kl_addr "$node"):$KL_HTTP_PORT" --mode "${KL_RANDOM_MODE:-p2p}" \
      --reads-per-blob "$KL_READS_PER_BLOB" --verify "$KL_VERIFY_READS" --node "node$node" "${seed[@]}"
  done
  for ((node = 1; node <= KL_NODES; node++)); do
    kl_wait_run "random$node"
    grep -hE '"(speeds \(MB/s\)|error rates)"' "$KL_RUN_DIR/logs/random$node.log" | sed "s/^/node$node: /" || true
    if [ "$kl_status" != 0 ]; then
      failed=$((failed + 1))
      echo "node$node: peerd-random exited with $kl_status$([ "$kl_status" = 124 ] && echo " (timeout)"); last lines:"
      tail -n 5 "$KL_RUN_DIR/logs/random$node.log" | sed "s/^/node$node:   /"
    fi
  done
  kl_p2p_bytes
  origin_after=$(kl_origin_bytes)
  kl_verdict test-random "$failed" "$kl_total_peer" \
    "peer bytes $kl_total_peer, upstream bytes $kl_total_upstream, origin sent $((origin_after - origin_before)) B ($(kl_elapsed "$start"))"
}

kl_image_ref() {
  case $1 in
    small | big) echo "$KL_REGISTRY/test/$1:latest" ;;
    *) echo "$1" ;;
  esac
}

kl_registry_blob_gets() { grep -c '"GET /v2/[^ ]*/blobs/sha256:' "$KL_RUN_DIR/logs/registry.log" 2>/dev/null || true; }

cmd_test_ctr() {
  local ref node dir failed=0 expect=() start=$SECONDS gets_before bin
  ref=$(kl_image_ref "$1")
  bin=$WORKLOADS_DIR/peerd-ctr
  kl_require_binary "$bin" peerd-ctr WORKLOADS_DIR
  gets_before=$(kl_registry_blob_gets)
  kl_p2p_mark
  echo "test-ctr: nodes 1..$KL_NODES pull $ref in turn through containerd -> peerd (timeout ${KL_TEST_TIMEOUT_S}s each)"
  for ((node = 1; node <= KL_NODES; node++)); do
    dir=$(kl_node_dir "$node")
    expect=()
    [ "$node" -lt 2 ] || expect=(--expect-peer-bytes)
    kl_spawn "ctr$node" timeout -k 5 "$KL_TEST_TIMEOUT_S" ip netns exec "$(kl_ns "$node")" "$bin" \
      --image "$ref" --address "$dir/containerd.sock" --hosts-dir "$dir/certs.d" --plain-http --remove-first \
      --peerd-metrics "http://$(kl_addr "$node"):$KL_HTTP_PORT/metrics" --node "node$node" \
      --pull-timeout-s "$KL_TEST_TIMEOUT_S" "${expect[@]}"
    kl_wait_run "ctr$node"
    sed "s/^/node$node: /" "$KL_RUN_DIR/logs/ctr$node.log"
    if [ "$kl_status" != 0 ]; then
      failed=$((failed + 1))
      echo "node$node: peerd-ctr exited with $kl_status$([ "$kl_status" = 124 ] && echo " (timeout)")"
    fi
  done
  kl_p2p_bytes
  kl_verdict test-ctr "$failed" "$kl_total_peer" "peer bytes $kl_total_peer, upstream bytes $kl_total_upstream, registry blob GETs" \
    "$(($(kl_registry_blob_gets) - gets_before)) ($(kl_elapsed "$start"))"
}

# kl_verdict TEST FAILED PEER_BYTES DETAIL...: one line; PASS needs every node to pass and, with more than one
# node, some bytes served by peers.
kl_verdict() {
  local test=$1 failed=$2 peer=$3
  shift 3
  if [ "$failed" -eq 0 ] && { [ "$KL_NODES" -lt 2 ] || [ "$peer" -gt 0 ]; }; then
    echo "verdict: PASS $test: $KL_NODES/$KL_NODES nodes ok, $*"
    return 0
  fi
  echo "verdict: FAIL $test: $((KL_NODES - failed))/$KL_NODES nodes ok, $*"
  return 1
}

cmd_delete() {
  local start=$SECONDS
  kl_teardown
  if [ "${KL_KEEP_RUN:-0}" = 1 ]; then
    kl_log "logs kept in $KL_RUN_DIR/logs"
  else
    rm -rf "$KL_RUN_DIR"
  fi
  echo "deleted: no $KL_NS_PREFIX-* namespace left ($(kl_elapsed "$start"))"
}

# ---- main ----

kl_usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

kl_all_exit() {
  local status=$?
  trap - EXIT INT TERM
  [ "$status" -eq 0 ] || KL_KEEP_RUN=1
  cmd_delete || true
  [ "$status" -eq 0 ] || kl_log "failed (status $status); logs kept in $KL_RUN_DIR/logs"
  exit "$status"
}

kl_create_exit() {
  local status=$?
  trap - EXIT INT TERM
  if [ "$status" -ne 0 ]; then
    kl_log "create failed (status $status): tearing down; logs kept in $KL_RUN_DIR/logs"
    kl_teardown
  fi
  exit "$status"
}

main() {
  local command=${1:-} nodes=3 mbit="" image=big status=0 start=$SECONDS
  kl_args="$*"
  shift || true
  case $command in -h | --help | help | "")
    kl_usage
    [ -n "$command" ] || return 2
    return 0
    ;;
  esac
  while [ $# -gt 0 ]; do
    case $1 in
      --nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
      --nodes=*) nodes=${1#--nodes=}; shift ;;
      --registry-mbit) mbit=${2:?--registry-mbit needs a value}; shift 2 ;;
      --registry-mbit=*) mbit=${1#--registry-mbit=}; shift ;;
      --image) image=${2:?--image needs a value}; shift 2 ;;
      --image=*) image=${1#--image=}; shift ;;
      -h | --help) kl_usage; return 0 ;;
      *) kl_die "unknown argument $1 (see --help)" ;;
    esac
  done
  [[ $nodes =~ ^[0-9]+$ ]] || kl_die "--nodes must be a number"
  kl_require_root
  mkdir -p "$KL_WORK_DIR"
  exec {kl_lock_fd}>"$KL_WORK_DIR/lock"
  flock -n "$kl_lock_fd" || kl_die "another kind/local command is running on $KL_WORK_DIR"
  trap 'exit 130' INT
  trap 'exit 143' TERM
  case $command in
    create)
      trap kl_create_exit EXIT
      cmd_create "$nodes" "$mbit"
      trap - EXIT
      ;;
    deploy) kl_load_state; cmd_deploy ;;
    test-random) kl_load_state; cmd_test_random ;;
    test-ctr) kl_load_state; cmd_test_ctr "$image" ;;
    delete) cmd_delete ;;
    all)
      trap kl_all_exit EXIT
      cmd_create "$nodes" "$mbit"
      kl_load_state
      cmd_deploy
      cmd_test_random || status=1
      cmd_test_ctr "$image" || status=1
      echo "all: $([ $status = 0 ] && echo PASS || echo FAIL) ($(kl_elapsed "$start") before delete)"
      return $status
      ;;
    *) kl_die "unknown command $command (see --help)" ;;
  esac
}

main "$@"
