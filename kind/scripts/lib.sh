#!/usr/bin/env bash
# Shared by kind.sh and kind/tests: settings and the wait loops. Source it; it defines functions only.
#
# Settings (environment):
#   KIND_CLUSTER_NAME  kind cluster name (default peerd; kubectl context kind-<name>)
#   PEERD_NAMESPACE    namespace of the release and the workloads (default peerd-ns, as in the original peerd)
#   HELM_RELEASE       helm release name (default peerd)
#   TIMEOUT_SECONDS    how long each wait may take before failing (default 300)
#   POLL_SECONDS       pause between two polls (default 5)

KIND_SCRIPTS_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
KIND_DIR=$(dirname -- "$KIND_SCRIPTS_DIR")
# shellcheck disable=SC2034 # used by the scripts that source this file
REPO_ROOT=$(dirname -- "$KIND_DIR")

KIND_CLUSTER_NAME=${KIND_CLUSTER_NAME:-peerd}
PEERD_NAMESPACE=${PEERD_NAMESPACE:-peerd-ns}
HELM_RELEASE=${HELM_RELEASE:-peerd}
TIMEOUT_SECONDS=${TIMEOUT_SECONDS:-300}
POLL_SECONDS=${POLL_SECONDS:-5}
KUBE_CONTEXT=${KUBE_CONTEXT:-kind-$KIND_CLUSTER_NAME}
# The chart's selector labels for release $HELM_RELEASE.
PEERD_POD_SELECTOR="app.kubernetes.io/name=peerd,app.kubernetes.io/instance=$HELM_RELEASE"

log() { printf '%s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

k() { kubectl --context "$KUBE_CONTEXT" -n "$PEERD_NAMESPACE" "$@"; }

# require_tools TOOL... : fails with one line naming every missing tool.
require_tools() {
  local missing=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]} (see kind/README.md)"
}

# wait_for_event REASON [MIN_PODS]
# Polls the peerd pods and their events until MIN_PODS pods (default: all of them) have an Event with reason
# REASON. Fails at once when a pod reports P2PFailed or P2PDisconnected, and after TIMEOUT_SECONDS otherwise,
# printing the last per-pod report either way. The parsing is kind/scripts/p2p_events.py (tested on fixtures).
wait_for_event() {
  local work status=0
  work=$(mktemp -d)
  poll_events "$work" "$@" || status=$?
  rm -rf "$work"
  return "$status"
}

# poll_events WORKDIR REASON [MIN_PODS]: the loop behind wait_for_event (WORKDIR holds the last payloads).
poll_events() {
  local work=$1 reason=$2 min_pods=${3:-0}
  local status who=$min_pods deadline=$((SECONDS + TIMEOUT_SECONDS)) attempt=0
  [ "$min_pods" = 0 ] && who=every
  log "waiting for event '$reason' on $who peerd pod(s) (timeout ${TIMEOUT_SECONDS}s)"
  while :; do
    attempt=$((attempt + 1))
    if k get pods -l "$PEERD_POD_SELECTOR" -o json >"$work/pods.json" &&
      k get events --field-selector involvedObject.kind=Pod -o json >"$work/events.json"; then
      status=0
      python3 "$KIND_SCRIPTS_DIR/p2p_events.py" --pods "$work/pods.json" --events "$work/events.json" \
        --reason "$reason" --min-pods "$min_pods" >"$work/report" || status=$?
    else
      status=1
      echo "kubectl failed (attempt $attempt); retrying" >"$work/report"
    fi
    case $status in
      0)
        cat "$work/report"
        log "Success: event '$reason' seen on enough pods."
        return 0
        ;;
      2 | 3)
        cat "$work/report"
        log "Failure: waiting for '$reason' stopped (see above)."
        return 1
        ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
      cat "$work/report"
      log "Timeout: event '$reason' not seen on enough pods after ${TIMEOUT_SECONDS}s ($attempt polls)."
      if [ "$reason" = P2PConnected ]; then
        log "(Pods only report P2P* events once peerd posts Kubernetes Events; with a peerd that does not, use"
        log " PEERD_WAIT_EVENTS=0: the DaemonSet's readiness already means 'DHT joined'.)"
      fi
      return 1
    fi
    tail -n 1 "$work/report"
    sleep "$POLL_SECONDS"
  done
}

# wait_for_job NAME: until the Job succeeded on every completion (0), any pod failed or the timeout passed (1).
wait_for_job() {
  local name=$1 deadline=$((SECONDS + TIMEOUT_SECONDS)) state completions succeeded failed
  completions=$(k get job "$name" -o jsonpath='{.spec.completions}') || return 1
  log "waiting for job/$name: $completions completion(s) (timeout ${TIMEOUT_SECONDS}s)"
  while :; do
    state=$(k get job "$name" -o jsonpath='{.status.succeeded} {.status.failed}') || state="? ?"
    read -r succeeded failed <<<"$state"
    if [ "${failed:-0}" != 0 ] && [ "${failed:-0}" != "?" ]; then
      log "Failure: job/$name has $failed failed pod(s)"
      return 1
    fi
    if [ "${succeeded:-0}" = "$completions" ]; then
      log "job/$name: $succeeded/$completions succeeded"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "Timeout: job/$name has ${succeeded:-0}/$completions succeeded after ${TIMEOUT_SECONDS}s"
      return 1
    fi
    sleep "$POLL_SECONDS"
  done
}

# render_manifest FILE NAME=VALUE... : prints FILE with every ${NAME} replaced (no envsubst needed).
render_manifest() {
  local file=$1
  shift
  python3 - "$file" "$@" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
values = dict(arg.split("=", 1) for arg in sys.argv[2:])
def substitute(match):
    if match.group(1) not in values:
        sys.exit(f"render_manifest: {sys.argv[1]} uses ${{{match.group(1)}}}, which was not given")
    return values[match.group(1)]
print(re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", substitute, text), end="")
PY
}
