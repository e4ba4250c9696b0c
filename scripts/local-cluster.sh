#!/usr/bin/env bash
# A peerd cluster on one machine, every process on its own loopback address (127.0.0.0/8 is all loopback on
# Linux, so nothing ever leaves the host): docker-registry on 127.0.0.100:5000 (its access log records every
# request), node N = peerd + containerd on 127.0.0.(10+N) (LC_NET moves the whole cluster to another /24),
# test images built offline with umoci and pushed with skopeo: test/small (a few small files, busybox when
# installed) and test/big (one 200 MB random layer, generated once and cached). Must run as root
# (containerd). Everything started here is torn down on exit or Ctrl-C (each process runs in its own process
# group, killed with SIGTERM then SIGKILL; every wait is bounded).
#
# CLI:
#   scripts/local-cluster.sh run  [--nodes N] [--small]   start, pull on node 1..N in order, print, tear down
#   scripts/local-cluster.sh up   [--nodes N]             start and keep running until Ctrl-C (prints commands)
#   scripts/local-cluster.sh images                       build the cached test images only
#   scripts/local-cluster.sh down                         kill what a crashed run left behind
# Library (scripts/demo.sh, benchmarks/e2e/run.sh): `source scripts/local-cluster.sh`, then lc_init (root
# check, teardown trap) and lc_build_images, lc_start_registry, lc_push_images, lc_start_nodes N,
# lc_pull N REF, lc_transfer pull|fetch peerd|direct N REF, lc_metric N NAME LABELS, lc_registry_blob_gets,
# lc_verify_content N..., lc_start_file_server DIR, lc_reset_node N, ... (each documented below).
#
# Knobs (environment): PEERD_BIN (default build/release/peerd/daemon/peerd), LC_WORK_DIR (default
# /var/tmp/peerd-local-cluster: images/ is a cache kept between runs, run/ is per run), LC_BIG_MB (200),
# LC_CACHE_SIZE (2GiB), LC_NET (127.0.0: the loopback /24 used, e.g. LC_NET=127.45.0 to run beside another
# cluster), LC_HTTP_PORT (5000), LC_ROUTER_PORT (5003), LC_REGISTRY_PORT (5000), LC_KEEP_RUN=1 keeps run/
# (logs) after teardown, LC_PEERD_ARGS (extra peerd flags).

lc_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERD_BIN=${PEERD_BIN:-$lc_repo/build/release/peerd/daemon/peerd}
LC_WORK_DIR=${LC_WORK_DIR:-/var/tmp/peerd-local-cluster}
LC_RUN_DIR=$LC_WORK_DIR/run
LC_IMAGES_DIR=$LC_WORK_DIR/images
LC_BIG_MB=${LC_BIG_MB:-200}
LC_CACHE_SIZE=${LC_CACHE_SIZE:-2GiB}
LC_HTTP_PORT=${LC_HTTP_PORT:-5000}
LC_ROUTER_PORT=${LC_ROUTER_PORT:-5003}
LC_NET=${LC_NET:-127.0.0}  # the /24 of loopback addresses used: registry .100, file server .101, node N .(10+N)
LC_REGISTRY_ADDR=${LC_REGISTRY_ADDR:-$LC_NET.100}
LC_FILE_SERVER_ADDR=${LC_FILE_SERVER_ADDR:-$LC_NET.101}
LC_REGISTRY_PORT=${LC_REGISTRY_PORT:-5000}
LC_REGISTRY=$LC_REGISTRY_ADDR:$LC_REGISTRY_PORT
LC_NODES_MAX=50           # addresses $LC_NET.11 .. $LC_NET.60
LC_WAIT_TENTHS_MAX=100    # every readiness wait gives up after 10 s
LC_STOP_TENTHS_MAX=50     # SIGTERM grace before SIGKILL: 5 s
LC_SMALL_REF=$LC_REGISTRY/test/small:latest
LC_BIG_REF=$LC_REGISTRY/test/big:latest

lc_log() { printf 'local-cluster: %s\n' "$*" >&2; }
lc_die() {
  lc_log "error: $*"
  exit 1
}

lc_node_addr() { echo "$LC_NET.$((10 + $1))"; }
lc_node_dir() { echo "$LC_RUN_DIR/node$1"; }
lc_node_sock() { echo "$LC_RUN_DIR/node$1/containerd.sock"; }
lc_node_url() { echo "http://$(lc_node_addr "$1"):$LC_HTTP_PORT"; }

lc_require_root() {
  [ "$(id -u)" -eq 0 ] || lc_die "must run as root (containerd needs it): sudo $0"
}

lc_require_tools() {
  local tool missing=()
  for tool in docker-registry umoci skopeo containerd ctr curl sha256sum setsid ss flock; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] || lc_die "missing ${missing[*]}: run scripts/install-deps.sh"
  [ -x "$PEERD_BIN" ] || lc_die "no peerd binary at $PEERD_BIN (build it, or set PEERD_BIN)"
}

# ---- processes: one process group each, pid file under run/pids ----

# lc_spawn NAME COMMAND...: starts COMMAND in a new session (its own process group), output to logs/NAME.log.
lc_spawn() {
  local name=$1
  shift
  setsid "$@" >"$LC_RUN_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$LC_RUN_DIR/pids/$name"
}

lc_pid() { cat "$LC_RUN_DIR/pids/$1" 2>/dev/null; }

lc_alive() {
  local pid
  pid=$(lc_pid "$1") || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# lc_stop NAME [SIGNAL]: signals the process group (default TERM), waits up to 5 s, then SIGKILL.
lc_stop() {
  local name=$1 signal=${2:-TERM} pid tenth
  pid=$(lc_pid "$name") || return 0
  # Every process started here names the run directory in its arguments: a pid that does not (reused since
  # a crashed run) is someone else's, and is left alone.
  if [ -z "$pid" ] || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$LC_RUN_DIR"; then
    rm -f "$LC_RUN_DIR/pids/$name"
    return 0
  fi
  kill -"$signal" -- -"$pid" 2>/dev/null || true
  for ((tenth = 0; tenth < LC_STOP_TENTHS_MAX; tenth++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- -"$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$LC_RUN_DIR/pids/$name"
}

# lc_wait_http NAME URL: polls URL until it answers (any status) while NAME is alive; 10 s at most.
lc_wait_http() {
  local name=$1 url=$2 tenth
  for ((tenth = 0; tenth < LC_WAIT_TENTHS_MAX; tenth++)); do
    curl -s -o /dev/null --max-time 1 "$url" && return 0
    lc_alive "$name" || break
    sleep 0.1
  done
  lc_log "$name did not come up ($url); last log lines:"
  tail -n 20 "$LC_RUN_DIR/logs/$name.log" >&2 || true
  return 1
}

lc_unmount_run_dir() {
  local mount_point count=0
  # containerd's overlayfs snapshotter mounts only while unpacking; unmount anything left, deepest first.
  while read -r mount_point; do
    umount -l "$mount_point" 2>/dev/null || true
    count=$((count + 1))
    [ $count -lt 1000 ] || break
  done < <(awk -v dir="$LC_RUN_DIR" 'index($2, dir) == 1 {print $2}' /proc/mounts | sort -r)
}

# Stops every process of this run (containerd and peerd first) and removes run/ (kept with LC_KEEP_RUN=1 or
# when the run failed, for its logs).
lc_teardown() {
  local status=${1:-0} file name
  [ -d "$LC_RUN_DIR/pids" ] || return 0
  for file in "$LC_RUN_DIR"/pids/containerd* "$LC_RUN_DIR"/pids/peerd* "$LC_RUN_DIR"/pids/*; do
    [ -f "$file" ] || continue
    name=$(basename "$file")
    lc_stop "$name"
  done
  lc_unmount_run_dir
  # Ctrl-C (130) and SIGTERM (143) are how `up` ends: not failures.
  if [ "${LC_KEEP_RUN:-0}" = 1 ] || { [ "$status" -ne 0 ] && [ "$status" -ne 130 ] && [ "$status" -ne 143 ]; }; then
    lc_log "logs kept in $LC_RUN_DIR/logs"
  else
    rm -rf "$LC_RUN_DIR"
  fi
}

lc_on_exit() {
  local status=$?
  trap - EXIT INT TERM
  [ -z "${lc_sleep_pid:-}" ] || kill "$lc_sleep_pid" 2>/dev/null || true
  lc_teardown "$status"
  exit "$status"
}

# Prepares run/ (killing what a previous, crashed run left) and installs the teardown trap.
lc_init() {
  lc_require_root
  lc_require_tools
  mkdir -p "$LC_WORK_DIR"
  # One cluster per work directory: a second would take the first's pid files for leftovers.
  exec {lc_lock_fd}>"$LC_WORK_DIR/lock"
  flock -n "$lc_lock_fd" || lc_die "another local cluster is using $LC_WORK_DIR (set LC_WORK_DIR and LC_NET)"
  LC_KEEP_RUN=0 lc_teardown 0
  rm -rf "$LC_RUN_DIR"
  mkdir -p "$LC_RUN_DIR"/{pids,logs} "$LC_IMAGES_DIR"
  trap lc_on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# lc_require_free ADDR:PORT...: dies when something already listens there (another cluster on the same
# addresses would otherwise answer in place of ours).
lc_require_free() {
  local endpoint
  for endpoint in "$@"; do
    if ss -Htuln "src $endpoint" 2>/dev/null | grep -q .; then
      lc_die "$endpoint is already in use (another local cluster?); stop it or pick another LC_NET"
    fi
  done
}

# ---- registry ----

lc_start_registry() {
  local dir=$LC_RUN_DIR/registry
  lc_require_free "$LC_REGISTRY"
  mkdir -p "$dir/data"
  # The access log records one line per request ("GET /v2/…/blobs/sha256:… HTTP/1.1" 200 BYTES).
  cat >"$dir/config.yml" <<EOF
version: 0.1
log: {level: info, formatter: text, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}
http: {addr: $LC_REGISTRY}
EOF
  lc_spawn registry docker-registry serve "$dir/config.yml"
  lc_wait_http registry "http://$LC_REGISTRY/v2/"
}

lc_registry_log() { cat "$LC_RUN_DIR/logs/registry.log" 2>/dev/null || true; }

# Blob GETs the registry answered so far (access-log lines), and the bytes it sent for them.
lc_registry_blob_gets() { lc_registry_log | grep -c '"GET /v2/[^ ]*/blobs/sha256:' || true; }
lc_registry_blob_bytes() {
  lc_registry_log | awk '/"GET \/v2\/[^ ]*\/blobs\/sha256:/ { for (i = 1; i < NF; i++) if ($i ~ /HTTP\/1\.[01]"$/) { sum += $(i + 2); break } }
    END { printf "%.0f\n", sum }'
}

# ---- images (cached in images/, rebuilt when missing) ----

# Builds oci layout images/oci with tags `small` (a few small files, busybox when installed) and `big`
# (one LC_BIG_MB MB random layer). Generated once; later runs reuse them.
lc_build_images() {
  local dir=$LC_IMAGES_DIR stamp=$LC_IMAGES_DIR/oci.$LC_BIG_MB.done applet
  [ -f "$stamp" ] && return 0
  lc_log "building test images in $dir (once; ${LC_BIG_MB} MB random layer)"
  rm -rf "$dir"
  mkdir -p "$dir/rootfs/bin" "$dir/rootfs/etc" "$dir/big"
  for applet in motd hostname issue; do echo "peerd local cluster: $applet" >"$dir/rootfs/etc/$applet"; done
  if [ -x /bin/busybox ]; then
    cp /bin/busybox "$dir/rootfs/bin/"
    for applet in sh ls cat echo; do ln -sf busybox "$dir/rootfs/bin/$applet"; done
  fi
  head -c "${LC_BIG_MB}M" /dev/urandom >"$dir/big/blob.bin"
  (
    cd "$dir"
    umoci init --layout oci
    umoci new --image oci:small
    umoci insert --image oci:small rootfs /
    umoci config --image oci:small --config.cmd /bin/sh --config.env PATH=/bin
    umoci new --image oci:big
    umoci insert --image oci:big big /
    umoci gc --layout oci
  ) >"$dir/build.log" 2>&1 || {
    cat "$dir/build.log" >&2
    lc_die "umoci failed"
  }
  rm -f "$dir/big/blob.bin"
  touch "$stamp"
}

lc_push_images() {
  local tag
  for tag in small big; do
    skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$LC_IMAGES_DIR/oci:$tag" \
      "docker://$LC_REGISTRY/test/$tag:latest" >>"$LC_RUN_DIR/logs/skopeo.log" 2>&1 ||
      lc_die "skopeo push of $tag failed: $(tail -n 3 "$LC_RUN_DIR/logs/skopeo.log")"
  done
}

# Total bytes of an image's blobs (manifest's config + layers) as the registry reports them.
lc_image_bytes() {
  local ref=$1 repo tag
  repo=${ref#*/}
  tag=${repo##*:}
  repo=${repo%:*}
  curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$LC_REGISTRY/v2/$repo/manifests/$tag" |
    grep -o '"size": *[0-9]*' | awk -F: '{ sum += $2 } END { printf "%.0f\n", sum }'
}

# The manifest digest of REF (for pulls by digest).
lc_image_digest() {
  local ref=$1 repo tag
  repo=${ref#*/}
  tag=${repo##*:}
  repo=${repo%:*}
  curl -fsI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$LC_REGISTRY/v2/$repo/manifests/$tag" | tr -d '\r' |
    awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

# ---- a static file server (nginx) for /blobs/ ----

# lc_write_nginx_conf DIR LISTEN ROOT: DIR/nginx.conf for a foreground nginx (sendfile on) serving ROOT on
# LISTEN, with its pid, logs and temp folders inside DIR (also used by kind/local/cluster.sh).
lc_write_nginx_conf() {
  local dir=$1 listen=$2 root=$3
  cat >"$dir/nginx.conf" <<EOF
daemon off;
user root;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 256; }
http {
  access_log $dir/access.log;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  sendfile on;
  server {
    listen $listen;
    root $root;
  }
}
EOF
}

# lc_start_file_server DIR [PORT]: nginx (sendfile on) serving DIR on $LC_FILE_SERVER_ADDR:PORT (8080).
lc_start_file_server() {
  local root=$1 port=${2:-8080} dir=$LC_RUN_DIR/nginx
  command -v nginx >/dev/null 2>&1 || lc_die "nginx not installed: run scripts/install-deps.sh"
  lc_require_free "$LC_FILE_SERVER_ADDR:$port"
  mkdir -p "$dir"
  lc_write_nginx_conf "$dir" "$LC_FILE_SERVER_ADDR:$port" "$root"
  lc_spawn nginx nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
  lc_wait_http nginx "http://$LC_FILE_SERVER_ADDR:$port/"
}

# ---- nodes ----

# Reads the whole help first: `grep -q` on a pipe would stop early and fail the pipeline on SIGPIPE (pipefail).
lc_peerd_supports() {
  local help
  help=$("$PEERD_BIN" --help 2>&1) || return 1
  [[ $help == *"$1"* ]]
}

# lc_start_peerd N NODES: peerd of node N, bootstrapping from nodes 1..min(3, NODES).
lc_start_peerd() {
  local node=$1 nodes=$2 addr dir bootstrap="" peer extra=()
  addr=$(lc_node_addr "$node")
  dir=$(lc_node_dir "$node")
  lc_require_free "$addr:$LC_HTTP_PORT" "$addr:$LC_ROUTER_PORT"
  mkdir -p "$dir/cache" "$dir/certs.d"
  for ((peer = 1; peer <= nodes && peer <= 3; peer++)); do
    bootstrap+="${bootstrap:+,}$(lc_node_addr "$peer"):$LC_ROUTER_PORT"
  done
  lc_peerd_supports --node-ip && extra+=("--node-ip=$addr")
  lc_peerd_supports --peer-plaintext && extra+=(--peer-plaintext)
  # The node's containerd content store (ctr's namespace "default"): images it holds are offered to peers.
  lc_peerd_supports --containerd-socket && extra+=("--containerd-socket=$dir/containerd.sock"
    "--containerd-namespace=default" "--containerd-content-root=$dir/root/io.containerd.content.v1.content")
  # shellcheck disable=SC2206 # word splitting of extra flags is intended
  [ -n "${LC_PEERD_ARGS:-}" ] && extra+=($LC_PEERD_ARGS)
  lc_spawn "peerd$node" "$PEERD_BIN" run --http-addr="$addr:$LC_HTTP_PORT" \
    --router-addr="$addr:$LC_ROUTER_PORT" --metrics-addr=off --hosts="http://$LC_REGISTRY" \
    --cache-dir="$dir/cache" --cache-size="$LC_CACHE_SIZE" --cache-fsync=false --bootstrap="$bootstrap" \
    --node-name="node$node" --log-level=info --add-mirror-configuration \
    --containerd-hosts-config-path="$dir/certs.d" "${extra[@]}"
  lc_wait_http "peerd$node" "http://$addr:$LC_HTTP_PORT/healthz"
}

lc_start_containerd() {
  local node=$1 dir tenth
  dir=$(lc_node_dir "$node")
  mkdir -p "$dir/root" "$dir/state"
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
EOF
  lc_spawn "containerd$node" containerd --config "$dir/containerd.toml"
  for ((tenth = 0; tenth < LC_WAIT_TENTHS_MAX; tenth++)); do
    ctr --address "$dir/containerd.sock" version >/dev/null 2>&1 && return 0
    lc_alive "containerd$node" || break
    sleep 0.1
  done
  tail -n 20 "$LC_RUN_DIR/logs/containerd$node.log" >&2
  lc_die "containerd of node $node did not come up"
}

# lc_start_nodes N: peerd + containerd on nodes 1..N.
lc_start_nodes() {
  local nodes=$1 node
  if [ "$nodes" -lt 1 ] || [ "$nodes" -gt $LC_NODES_MAX ]; then lc_die "--nodes must be 1..$LC_NODES_MAX"; fi
  for ((node = 1; node <= nodes; node++)); do
    lc_start_peerd "$node" "$nodes" || lc_die "peerd of node $node did not start"
    lc_start_containerd "$node"
  done
}

# lc_reset_node N: stops node N's containerd and peerd and deletes its state (cache, content, config).
lc_reset_node() {
  local node=$1
  lc_stop "containerd$node"
  lc_stop "peerd$node"
  lc_unmount_run_dir
  rm -rf "$(lc_node_dir "$node")"
}

# lc_restart_peerd_cold N NODES: node N's peerd restarted with an empty cache (containerd untouched).
lc_restart_peerd_cold() {
  lc_stop "peerd$1"
  rm -rf "$(lc_node_dir "$1")/cache"
  lc_start_peerd "$1" "$2"
}

lc_ctr() {
  local node=$1
  shift
  ctr --address "$(lc_node_sock "$node")" "$@"
}

# lc_transfer MODE VIA N REF: on node N, MODE "pull" (`ctr images pull`: fetch and unpack) or "fetch" (`ctr
# content fetch`: the transfer alone) of REF, VIA "peerd" (the hosts.toml peerd wrote) or "direct" (the
# registry, no mirror). Prints the seconds; the output goes to logs/pullN.log.
lc_transfer() {
  local mode=$1 via=$2 node=$3 ref=$4 start end ctr_command=(images pull) hosts=()
  [ "$mode" = pull ] || ctr_command=(content fetch)
  [ "$via" = direct ] || hosts=(--hosts-dir "$(lc_node_dir "$node")/certs.d")
  start=$(date +%s.%N)
  lc_ctr "$node" "${ctr_command[@]}" --plain-http "${hosts[@]}" "$ref" >"$LC_RUN_DIR/logs/pull$node.log" 2>&1 || {
    grep -v '|' "$LC_RUN_DIR/logs/pull$node.log" | grep -v '^elapsed' | tail -n 5 >&2
    return 1
  }
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", e - s }'
}

# lc_pull N REF: pulls REF on node N through its peerd; prints the seconds.
lc_pull() { lc_transfer pull peerd "$@"; }

# lc_pull_direct N REF: pulls REF on node N straight from the registry (no mirror); prints the seconds.
lc_pull_direct() { lc_transfer pull direct "$@"; }

# lc_remove_image N REF: deletes REF and (synchronous garbage collection) its content from node N.
lc_remove_image() { lc_ctr "$1" images rm --sync "$2" >/dev/null 2>&1 || true; }

# lc_metric N NAME [LABELS]: a counter from node N's /metrics, e.g. lc_metric 2 peerd_bytes_fetched_total
# 'source="peer"'; 0 when absent or the node is down.
lc_metric() {
  local node=$1 name=$2 labels=${3:-} series
  series=$name${labels:+\{$labels\}}
  curl -fs --max-time 2 "$(lc_node_url "$node")/metrics" 2>/dev/null |
    awk -v s="$series" '$1 == s { printf "%.0f\n", $2; found = 1 } END { if (!found) print 0 }'
}

# lc_content_digests N: "DIGEST" lines of every blob in node N's content store, sorted.
lc_content_digests() { lc_ctr "$1" content ls -q | sort; }

# lc_verify_content N...: every blob on every node hashes to its digest, and all nodes hold the same set.
lc_verify_content() {
  local first=$1 node digest actual reference
  reference=$(lc_content_digests "$first")
  [ -n "$reference" ] || {
    lc_log "node $first holds no content"
    return 1
  }
  for node in "$@"; do
    [ "$(lc_content_digests "$node")" = "$reference" ] || {
      lc_log "node $node holds different blobs than node $first"
      return 1
    }
    while read -r digest; do
      actual=sha256:$(lc_ctr "$node" content get "$digest" | sha256sum | cut -d' ' -f1)
      [ "$actual" = "$digest" ] || {
        lc_log "node $node: $digest hashes to $actual"
        return 1
      }
    done <<<"$reference"
  done
  echo "$reference" | wc -l
}

# ---- CLI ----

lc_usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

lc_main() {
  local command=${1:-}
  shift || true
  case $command in -h | --help | help) lc_usage; return 0 ;; esac
  local nodes=3 ref=$LC_BIG_REF node seconds
  while [ $# -gt 0 ]; do
    case $1 in
      --nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
      --nodes=*) nodes=${1#--nodes=}; shift ;;
      --small) ref=$LC_SMALL_REF; shift ;;
      -h | --help) lc_usage; return 0 ;;
      *) lc_die "unknown argument $1 (see --help)" ;;
    esac
  done
  case $command in
    images)
      mkdir -p "$LC_IMAGES_DIR"
      lc_build_images
      lc_log "images in $LC_IMAGES_DIR/oci: small, big"
      ;;
    down)
      lc_require_root
      LC_KEEP_RUN=0 lc_teardown 0
      ;;
    run | up)
      lc_init
      lc_build_images
      lc_start_registry || lc_die "registry did not start"
      lc_push_images
      lc_start_nodes "$nodes"
      lc_log "registry http://$LC_REGISTRY, $nodes nodes on $(lc_node_addr 1)..$(lc_node_addr "$nodes")"
      if [ "$command" = up ]; then
        for ((node = 1; node <= nodes; node++)); do
          echo "node $node: ctr --address $(lc_node_sock "$node") images pull --plain-http" \
            "--hosts-dir $(lc_node_dir "$node")/certs.d $ref   # metrics: curl $(lc_node_url "$node")/metrics"
        done
        lc_log "running; Ctrl-C tears everything down"
        # `wait` returns at once on a trapped signal (a foreground sleep would delay the teardown).
        while true; do
          sleep 3600 &
          lc_sleep_pid=$!
          wait "$lc_sleep_pid" || true
        done
      fi
      for ((node = 1; node <= nodes; node++)); do
        seconds=$(lc_pull "$node" "$ref") || lc_die "pull on node $node failed"
        echo "node $node: pulled $ref in ${seconds}s; peer bytes $(lc_metric "$node" peerd_bytes_fetched_total \
          'source="peer"'), upstream bytes $(lc_metric "$node" peerd_bytes_fetched_total 'source="upstream"'),"\
          "registry blob GETs so far $(lc_registry_blob_gets)"
      done
      lc_log "content verified: $(lc_verify_content $(seq 1 "$nodes")) blobs identical on every node"
      ;;
    *)
      lc_usage
      [ -z "$command" ] || lc_die "unknown command $command"
      return 2
      ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  lc_main "$@"
fi
