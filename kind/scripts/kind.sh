#!/usr/bin/env bash
# peerd on a local kind cluster (needs docker, kind, kubectl, helm and python3). The make targets call it:
#   kind.sh create        make kind-create       cluster from kind/cluster.yaml (1 control plane, 3 workers)
#   kind.sh deploy        make kind-deploy       load $PEERD_IMAGE, helm install charts/peerd, wait for P2PConnected
#   kind.sh test-random   make kind-test-random  blob origin + workloads/random on every node, wait for P2PActive
#   kind.sh test-ctr      make kind-test-ctr     workloads/ctr on every node (image pulls via containerd)
#   kind.sh delete        make kind-delete       delete the cluster
# Settings (environment; see also kind/scripts/lib.sh): PEERD_IMAGE (peerd:dev), RANDOM_IMAGE (peerd-random:dev),
# CTR_IMAGE (peerd-ctr:dev), CTR_IMAGES (space-separated images the ctr workload pulls), BLOB_SIZE_MIB (256),
# PEERD_WAIT_EVENTS (1: wait for P2P* Kubernetes events; 0: rely on readiness and peer-byte metrics instead).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

PEERD_IMAGE=${PEERD_IMAGE:-peerd:dev}
RANDOM_IMAGE=${RANDOM_IMAGE:-peerd-random:dev}
CTR_IMAGE=${CTR_IMAGE:-peerd-ctr:dev}
CTR_IMAGES=${CTR_IMAGES:-mcr.microsoft.com/dotnet/runtime:8.0}
BLOB_SIZE_MIB=${BLOB_SIZE_MIB:-256}
PEERD_WAIT_EVENTS=${PEERD_WAIT_EVENTS:-1}
METRICS_PORT=${METRICS_PORT:-5004}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; }

require_cluster() {
  cluster_exists || die "no kind cluster '$KIND_CLUSTER_NAME': run make kind-create"
}

# load_image IMAGE HINT: puts a local docker image on every kind node.
load_image() {
  docker image inspect "$1" >/dev/null 2>&1 || die "docker image $1 not found: $2"
  log "loading $1 into kind cluster '$KIND_CLUSTER_NAME'"
  kind load docker-image "$1" --name "$KIND_CLUSTER_NAME"
}

# image_repository IMAGE / image_tag IMAGE: "host:5000/peerd:dev" -> "host:5000/peerd" and "dev".
image_repository() {
  local image=$1
  if [[ ${image##*/} == *:* ]]; then echo "${image%:*}"; else echo "$image"; fi
}
image_tag() {
  local image=$1
  if [[ ${image##*/} == *:* ]]; then echo "${image##*:}"; else echo latest; fi
}

peerd_pod_count() {
  k get daemonset "$HELM_RELEASE" -o jsonpath='{.status.desiredNumberScheduled}' 2>/dev/null ||
    die "peerd is not deployed in $PEERD_NAMESPACE: run make kind-deploy"
}

# p2p_bytes: per peerd pod, bytes it fetched from peers and from upstream (its /metrics through the API server);
# prints the table and returns non-zero when no pod fetched anything from a peer.
p2p_bytes() {
  local pod metrics peer upstream total=0
  printf '%-24s %16s %16s\n' pod "from peers (B)" "upstream (B)"
  for pod in $(k get pods -l "$PEERD_POD_SELECTOR" -o jsonpath='{.items[*].metadata.name}'); do
    metrics=$(kubectl --context "$KUBE_CONTEXT" get --raw \
      "/api/v1/namespaces/$PEERD_NAMESPACE/pods/$pod:$METRICS_PORT/proxy/metrics" 2>/dev/null) || metrics=""
    peer=$(awk '/^peerd_bytes_fetched_total\{.*source="peer"/ { sum += $NF } END { printf "%d", sum }' <<<"$metrics")
    upstream=$(awk '/^peerd_bytes_fetched_total\{.*source="upstream"/ { sum += $NF } END { printf "%d", sum }' \
      <<<"$metrics")
    printf '%-24s %16s %16s\n' "$pod" "$peer" "$upstream"
    total=$((total + peer))
  done
  [ "$total" -gt 0 ]
}

cmd_create() {
  require_tools kind kubectl docker
  if cluster_exists; then die "kind cluster '$KIND_CLUSTER_NAME' exists already (make kind-delete first)"; fi
  kind create cluster --name "$KIND_CLUSTER_NAME" --config "$KIND_DIR/cluster.yaml" --wait 120s
  kubectl --context "$KUBE_CONTEXT" get nodes -o wide
}

cmd_deploy() {
  require_tools kind kubectl helm docker python3
  require_cluster
  load_image "$PEERD_IMAGE" "run make build-image"
  log "helm: installing release '$HELM_RELEASE' into $PEERD_NAMESPACE"
  helm upgrade --install "$HELM_RELEASE" "$REPO_ROOT/charts/peerd" \
    --kube-context "$KUBE_CONTEXT" --namespace "$PEERD_NAMESPACE" --create-namespace \
    --values "$KIND_DIR/values.yaml" \
    --set-string "image.repository=$(image_repository "$PEERD_IMAGE")" \
    --set-string "image.tag=$(image_tag "$PEERD_IMAGE")"
  # Ready means: cache open, HTTP up and the DHT joined through the headless Service.
  k rollout status "daemonset/$HELM_RELEASE" --timeout "${TIMEOUT_SECONDS}s"
  k get pods -l "$PEERD_POD_SELECTOR" -o wide
  if [ "$PEERD_WAIT_EVENTS" = 0 ]; then
    log "Success: every peerd pod is ready (joined the DHT); PEERD_WAIT_EVENTS=0, events not checked."
    return 0
  fi
  log "waiting for pods to connect"
  wait_for_event P2PConnected
}

# run_workload NAME MANIFEST IMAGE K=V...: (re)creates the workload Job, waits for it, prints its logs, then
# checks that peers served data (P2PActive on at least one pod, or peer bytes in the metrics).
run_workload() {
  local name=$1 manifest=$2 nodes status=0
  shift 2
  nodes=$(peerd_pod_count)
  [ "${nodes:-0}" -gt 0 ] || die "no peerd pods scheduled"
  k delete job "$name" --ignore-not-found --cascade=foreground --wait
  render_manifest "$KIND_DIR/manifests/$manifest" NODE_COUNT="$nodes" TIMEOUT_SECONDS="$TIMEOUT_SECONDS" "$@" |
    k apply -f -
  wait_for_job "$name" || status=$?
  k logs -l "job-name=$name" --prefix --tail=-1 || true
  [ "$status" = 0 ] || die "workload $name failed (logs above)"
  if p2p_bytes; then log "peers served data"; else log "no pod fetched any byte from a peer"; fi
  if [ "$PEERD_WAIT_EVENTS" = 0 ]; then
    p2p_bytes >/dev/null || die "workload $name: no peer-to-peer transfer happened"
    return 0
  fi
  log "checking p2p active pods"
  wait_for_event P2PActive 1
}

cmd_test_random() {
  require_tools kind kubectl docker python3
  require_cluster
  load_image "$RANDOM_IMAGE" "run make build-image (it builds the random workload image too)"
  render_manifest "$KIND_DIR/manifests/blob-origin.yaml" BLOB_SIZE_MIB="$BLOB_SIZE_MIB" | k apply -f -
  k rollout status deployment/blob-origin --timeout "${TIMEOUT_SECONDS}s"
  run_workload random random.yaml RANDOM_IMAGE="$RANDOM_IMAGE" \
    BLOB_URL="http://blob-origin.$PEERD_NAMESPACE.svc.cluster.local/blob.bin"
}

cmd_test_ctr() {
  require_tools kind kubectl docker python3
  require_cluster
  load_image "$CTR_IMAGE" "run make build-image (it builds the ctr workload image too)"
  run_workload ctr ctr.yaml CTR_IMAGE="$CTR_IMAGE" CTR_IMAGES="$CTR_IMAGES"
}

cmd_delete() {
  require_tools kind
  if cluster_exists; then
    kind delete cluster --name "$KIND_CLUSTER_NAME"
  else
    log "no kind cluster '$KIND_CLUSTER_NAME'"
  fi
}

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  exit "${1:-0}"
}

main() {
  case "${1:-}" in
    create) cmd_create ;;
    deploy) cmd_deploy ;;
    test-random) cmd_test_random ;;
    test-ctr) cmd_test_ctr ;;
    delete) cmd_delete ;;
    -h | --help | help) usage 0 ;;
    *) usage 2 >&2 ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
