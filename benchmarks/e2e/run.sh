#!/usr/bin/env bash
# End-to-end ratio benchmarks of the peerd binary on this machine's loopback (scripts/local-cluster.sh). Each
# prints "metric: value (baseline) vs value (peerd) = ratio   [target; details]":
#   i    serving a cached blob (1 GiB) over loopback: peerd /blobs/ second read vs nginx sendfile of the same
#        file (curl -o /dev/null; throughput, median of --trials)                          target >= 1.0
#   ii   the 200 MB image on an upstream miss: through peerd (one node, empty cache) vs straight from the
#        registry, as `ctr images pull` (fetch + unpack) and `ctr content fetch` (transfer only); median of
#        --trials                                                                         target <= 1.10x
#   iii  peer hit with the registry's replies capped at --cap-mbit (tc htb on lo, filtered on the registry's
#        source address and port): node 2 (cold peerd, node 1 pulled) vs node 3 straight from the capped
#        registry, pull and fetch; also prints the uncapped direct time, the ceiling any mirror can reach
#                                                                                          target >= 4x
#   iv   peerd RSS idle vs while serving --streams concurrent whole reads of the cached blob (VmRSS sampled
#        every 100 ms; VmHWM after /proc/PID/clear_refs), beside nginx's worker serving the same streams
# Root. Bounded: every wait has a limit; the cluster, the tc qdisc and the blob are removed on exit/Ctrl-C.
# Takes about 4 minutes with the defaults (2 cores).
#
# Usage: benchmarks/e2e/run.sh [--only i,ii,iii,iv] [--trials N] [--blob-mib N] [--streams N] [--cap-mbit N]
# Knobs: PEERD_BIN and the LC_* variables of scripts/local-cluster.sh (LC_NET=127.46.0 runs beside a demo).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/local-cluster.sh disable=SC1091
source "$repo/scripts/local-cluster.sh"

only=i,ii,iii,iv
trials=3
blob_mib=1024
streams=10
cap_mbit=200
while [ $# -gt 0 ]; do
  case $1 in
    --only) only=${2:?}; shift 2 ;;
    --trials) trials=${2:?}; shift 2 ;;
    --blob-mib) blob_mib=${2:?}; shift 2 ;;
    --streams) streams=${2:?}; shift 2 ;;
    --cap-mbit) cap_mbit=${2:?}; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "e2e: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
wants() { [[ ",$only," == *",$1,"* ]]; }
if [ "$trials" -lt 1 ] || [ "$trials" -gt 20 ]; then lc_die "--trials must be 1..20"; fi
if [ "$streams" -lt 1 ] || [ "$streams" -gt 64 ]; then lc_die "--streams must be 1..64"; fi

file_port=8080
file_url=http://$LC_FILE_SERVER_ADDR:$file_port/blob.bin
export LC_PEERD_ARGS="--allowed-upstreams=$LC_REGISTRY,$LC_FILE_SERVER_ADDR:$file_port ${LC_PEERD_ARGS:-}"
tc_added=0

bench_on_exit() {
  local status=$?
  trap - EXIT INT TERM
  for stream in "${stream_pids[@]}"; do kill "$stream" 2>/dev/null || true; done
  if [ $tc_added = 1 ]; then tc qdisc del dev lo root 2>/dev/null || true; fi
  lc_teardown "$status"
  exit "$status"
}

# ---- helpers ----

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (a > 0) ? b / a : 0 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# curl_bytes_per_second URL EXPECTED_BYTES: one whole read to /dev/null; dies on a short or failed read.
curl_bytes_per_second() {
  local status size rate
  read -r status size rate < <(curl -s --max-time 300 -o /dev/null \
    -w '%{http_code} %{size_download} %{speed_download}\n' "$1" || true)
  if [ "$status" != 200 ] || [ "$size" != "$2" ]; then lc_die "read of $1: status $status, $size of $2 bytes"; fi
  echo "$rate"
}

# A process's memory field in KiB ("VmRSS", "VmHWM").
proc_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# nginx's worker pid (the master's only child).
nginx_worker() { pgrep -P "$(lc_pid nginx)" | head -n 1; }

# streams_rss PID URL: starts $streams concurrent whole reads of URL, samples PID's VmRSS every 100 ms until
# they finish (5 min guard); sets stream_peak_kib, stream_hwm_kib and stream_bytes_per_second. Runs in the
# main shell (not a subshell) so that the exit trap can stop the readers.
stream_pids=()
streams_rss() {
  local pid=$1 url=$2 rss tenth stream start end alive
  stream_peak_kib=0
  echo 5 >"/proc/$pid/clear_refs" # resets VmHWM to the current RSS
  start=$(date +%s.%N)
  stream_pids=()
  for ((stream = 0; stream < streams; stream++)); do
    curl -s --max-time 300 -o /dev/null "$url" &
    stream_pids+=($!)
  done
  for ((tenth = 0; tenth < 3000; tenth++)); do
    rss=$(proc_kib "$pid" VmRSS)
    [ "${rss:-0}" -le "$stream_peak_kib" ] || stream_peak_kib=$rss
    alive=0
    for stream in "${stream_pids[@]}"; do kill -0 "$stream" 2>/dev/null && alive=1 && break; done
    [ $alive = 1 ] || break
    sleep 0.1
  done
  for stream in "${stream_pids[@]}"; do wait "$stream" || lc_die "a stream of $url failed"; done
  stream_pids=()
  end=$(date +%s.%N)
  stream_hwm_kib=$(proc_kib "$pid" VmHWM)
  stream_bytes_per_second=$(awk -v n="$streams" -v b="$blob_bytes" -v s="$start" -v e="$end" \
    'BEGIN { printf "%.0f", n * b / (e - s) }')
}

# ---- setup ----

lc_init
trap bench_on_exit EXIT
echo "e2e: peerd $PEERD_BIN, cluster on $LC_NET.x, $(nproc) cores"
blob_bytes=$((blob_mib * 1048576))
if wants i || wants iv; then
  mkdir -p "$LC_RUN_DIR/files"
  head -c "$blob_bytes" /dev/urandom >"$LC_RUN_DIR/files/blob.bin"
  lc_start_file_server "$LC_RUN_DIR/files" "$file_port" || lc_die "nginx did not start"
fi
if wants ii || wants iii; then
  lc_build_images
fi
# peerd needs a --hosts registry even for /blobs/; the images are pushed only when a pull case runs.
lc_start_registry || lc_die "registry did not start"
if wants ii || wants iii; then
  lc_push_images
  image_mb=$(awk -v b="$(lc_image_bytes "$LC_BIG_REF")" 'BEGIN { printf "%.1f", b / 1e6 }')
fi

# ---- i and iv: one node serving a cached blob ----

if wants i || wants iv; then
  lc_start_peerd 1 1 || lc_die "peerd did not start"
  peerd_url=$(lc_node_url 1)/blobs/$file_url
  curl_bytes_per_second "$peerd_url" "$blob_bytes" >/dev/null # the first read fills the cache
  upstream_before=$(lc_metric 1 peerd_bytes_fetched_total 'source="upstream"')
  if wants i; then
    nginx_rates=()
    peerd_rates=()
    for ((trial = 0; trial < trials; trial++)); do
      nginx_rates+=("$(curl_bytes_per_second "$file_url" "$blob_bytes")")
      peerd_rates+=("$(curl_bytes_per_second "$peerd_url" "$blob_bytes")")
    done
    nginx_rate=$(printf '%s\n' "${nginx_rates[@]}" | median)
    peerd_rate=$(printf '%s\n' "${peerd_rates[@]}" | median)
    upstream_again=$(($(lc_metric 1 peerd_bytes_fetched_total 'source="upstream"') - upstream_before))
    printf 'i   cached %s MiB blob to a client, MB/s: %.0f (nginx sendfile) vs %.0f (peerd /blobs/) = %sx' \
      "$blob_mib" "$(awk -v r="$nginx_rate" 'BEGIN { print r / 1e6 }')" \
      "$(awk -v r="$peerd_rate" 'BEGIN { print r / 1e6 }')" "$(ratio "$nginx_rate" "$peerd_rate")"
    echo "   [target >= 1.0; median of $trials; upstream bytes during the cached reads: $upstream_again]"
  fi
  if wants iv; then
    pid=$(lc_pid peerd1)
    sleep 1
    idle_kib=$(proc_kib "$pid" VmRSS)
    streams_rss "$pid" "$peerd_url"
    peerd_peak=$stream_peak_kib peerd_hwm=$stream_hwm_kib peerd_rate=$stream_bytes_per_second
    streams_rss "$(nginx_worker)" "$file_url"
    nginx_peak=$stream_peak_kib nginx_hwm=$stream_hwm_kib nginx_rate=$stream_bytes_per_second
    printf 'iv  peerd RSS, MiB: %s (idle) vs %s (serving %s x %s MiB, VmHWM %s) = %sx\n' "$(mib $((idle_kib * 1024)))" \
      "$(mib $((peerd_peak * 1024)))" "$streams" "$blob_mib" "$(mib $((peerd_hwm * 1024)))" \
      "$(ratio "$idle_kib" "$peerd_peak")"
    printf 'iv  RSS serving %s streams, MiB: %s (nginx worker, VmHWM %s) vs %s (peerd) = %sx;' "$streams" \
      "$(mib $((nginx_peak * 1024)))" "$(mib $((nginx_hwm * 1024)))" "$(mib $((peerd_peak * 1024)))" \
      "$(ratio "$nginx_peak" "$peerd_peak")"
    printf ' aggregate MB/s %.0f (nginx) vs %.0f (peerd)\n' "$(awk -v r="$nginx_rate" 'BEGIN { print r / 1e6 }')" \
      "$(awk -v r="$peerd_rate" 'BEGIN { print r / 1e6 }')"
  fi
  lc_reset_node 1
fi

# ---- ii: upstream miss through peerd vs direct, one node ----

# miss_trials MODE: $trials of (direct, then through a cold peerd) on node 1; prints the ii line for MODE.
miss_trials() {
  local mode=$1 trial seconds direct through direct_times=() peerd_times=()
  for ((trial = 0; trial < trials; trial++)); do
    seconds=$(lc_transfer "$mode" direct 1 "$LC_BIG_REF") || lc_die "direct $mode failed"
    direct_times+=("$seconds")
    lc_remove_image 1 "$LC_BIG_REF"
    lc_restart_peerd_cold 1 1 || lc_die "peerd did not restart"
    seconds=$(lc_transfer "$mode" peerd 1 "$LC_BIG_REF") || lc_die "$mode through peerd failed"
    peerd_times+=("$seconds")
    lc_remove_image 1 "$LC_BIG_REF"
  done
  direct=$(printf '%s\n' "${direct_times[@]}" | median)
  through=$(printf '%s\n' "${peerd_times[@]}" | median)
  printf 'ii  ctr %s %s MB on an upstream miss, s: %.2f (direct from registry) vs %.2f (through peerd) = %sx' \
    "$(ctr_name "$mode")" "$image_mb" "$direct" "$through" "$(ratio "$direct" "$through")"
  echo "   [target <= 1.10x; median of $trials; direct ${direct_times[*]}; peerd ${peerd_times[*]}]"
}
ctr_name() { if [ "$1" = pull ]; then echo "images pull"; else echo "content fetch"; fi; }

if wants ii; then
  lc_start_nodes 1
  miss_trials pull
  miss_trials fetch
  lc_reset_node 1
fi

# ---- iii: peer hit vs the capped registry, three nodes ----

# hit_vs_capped MODE: node 2 (cold peerd, peers hold the image) vs node 3 straight from the capped registry.
hit_vs_capped() {
  local mode=$1 hit hit_peer_before hit_peer direct
  lc_restart_peerd_cold 2 3 || lc_die "peerd did not restart"
  hit_peer_before=$(lc_metric 2 peerd_bytes_fetched_total 'source="peer"')
  hit=$(lc_transfer "$mode" peerd 2 "$LC_BIG_REF") || lc_die "peer-hit $mode on node 2 failed"
  hit_peer=$(($(lc_metric 2 peerd_bytes_fetched_total 'source="peer"') - hit_peer_before))
  direct=$(lc_transfer "$mode" direct 3 "$LC_BIG_REF") || lc_die "direct $mode on node 3 failed"
  lc_remove_image 2 "$LC_BIG_REF"
  lc_remove_image 3 "$LC_BIG_REF"
  printf 'iii ctr %s %s MB, registry capped at %s Mbit/s, s: %.2f (direct from registry) vs %.2f (peer hit) = %sx faster' \
    "$(ctr_name "$mode")" "$image_mb" "$cap_mbit" "$direct" "$hit" "$(ratio "$hit" "$direct")"
  echo "   [target >= 4x; node 2 fetched $(mib "$hit_peer") MiB from peers; the same uncapped and direct took" \
    "${uncapped[$mode]}s, so no mirror can beat $(ratio "${uncapped[$mode]}" "$direct")x here]"
}

if wants iii; then
  if ! tc qdisc show dev lo | grep -q '^qdisc noqueue'; then
    lc_log "iii skipped: lo already has a qdisc ($(tc qdisc show dev lo | head -n 1)); not touching it"
  else
    lc_start_nodes 3
    # containerd's own rate bounds any peer hit: the same direct transfers uncapped, for reference.
    declare -A uncapped
    for mode in pull fetch; do
      uncapped[$mode]=$(lc_transfer "$mode" direct 3 "$LC_BIG_REF") || lc_die "uncapped direct $mode failed"
      lc_remove_image 3 "$LC_BIG_REF"
    done
    # Unclassified traffic bypasses htb's classes (default 0: sent directly), so only the registry's
    # replies (source address and port) are shaped. lo's MTU is 64 KiB: quantum and bursts at least that.
    tc qdisc add dev lo root handle 1: htb
    tc_added=1
    tc class add dev lo parent 1: classid 1:10 htb rate "${cap_mbit}mbit" ceil "${cap_mbit}mbit" burst 256k \
      cburst 256k quantum 65536
    tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip src "$LC_REGISTRY_ADDR/32" \
      match ip sport "$LC_REGISTRY_PORT" 0xffff flowid 1:10
    cold=$(lc_pull 1 "$LC_BIG_REF") || lc_die "cold pull on node 1 failed"
    echo "iii cold ctr images pull through peerd on node 1 (registry capped): ${cold}s"
    hit_vs_capped pull
    hit_vs_capped fetch
    tc qdisc del dev lo root
    tc_added=0
  fi
fi
