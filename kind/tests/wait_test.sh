#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2030,SC2031 # literal ${...} and $(...) on purpose; subshells only read counters
# Tests the kind scripts without a cluster: kind/scripts/lib.sh's waits and kind.sh's deploy run against
# fake kubectl/kind/helm/docker (fake_tools.sh) that replay the fixture payloads, and every call is checked.
# Shows: success after several polls, a clear timeout, an immediate stop on P2PFailed, retries when kubectl
# fails, job success/failure/timeout, manifest rendering, image name parsing, and the helm command kind-deploy
# runs. Prints one verdict line; exits 1 on failure. PYTHON selects the interpreter (default python3).
set -uo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
fixtures=$here/fixtures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
for tool in kubectl kind helm docker; do ln -s "$here/fake_tools.sh" "$work/bin/$tool"; done
if [ -n "${PYTHON:-}" ]; then
  printf '#!/bin/sh\nexec %s "$@"\n' "$PYTHON" >"$work/bin/python3"
  chmod +x "$work/bin/python3"
fi
export PATH="$work/bin:$PATH"

passed=0
failed=0
# check NAME COMMAND...: COMMAND must succeed.
check() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "  FAIL $name" >&2
    sed 's/^/       | /' "$FAKE_DIR/out" >&2 2>/dev/null || true
  fi
}
contains() { grep -qF -- "$1" "$FAKE_DIR/out"; }
lacks() { ! grep -qF -- "$1" "$FAKE_DIR/out"; }
calls() { grep -cF -- "$1" "$FAKE_DIR/calls.log" || true; }

# scenario NAME EVENT-FIXTURE...: a fresh fake cluster whose successive `get events` answers are the fixtures.
scenario() {
  export FAKE_DIR=$work/$1
  shift
  mkdir -p "$FAKE_DIR"
  cp "$fixtures/pods.json" "$FAKE_DIR/pods.json"
  : >"$FAKE_DIR/events.list"
  local fixture
  for fixture in "$@"; do
    if [ "$fixture" = FAIL ]; then echo FAIL; else echo "$fixtures/$fixture"; fi >>"$FAKE_DIR/events.list"
  done
}

# run_lib COMMAND...: runs a lib.sh function in a subshell with fast polling; output in $FAKE_DIR/out.
run_lib() {
  (
    export POLL_SECONDS=0 TIMEOUT_SECONDS=${TIMEOUT_SECONDS:-30}
    # shellcheck source-path=SCRIPTDIR source=../scripts/lib.sh
    source "$here/../scripts/lib.sh"
    "$@"
  ) >"$FAKE_DIR/out" 2>&1
}

# 1. Connected after three polls: nothing, two of three, all.
scenario connects events-none-connected.json events-one-never-connected.json events-all-connected.json
run_lib wait_for_event P2PConnected
check "wait succeeds once every pod connected" test $? = 0
check "success is reported" contains "Success: event 'P2PConnected' seen on enough pods."
check "three polls of events" test "$(calls ' get events ')" = 3
check "events are read with the cluster context, namespace and pod field selector" \
  test "$(calls 'kubectl --context kind-peerd -n peerd-ns get events --field-selector involvedObject.kind=Pod -o json')" = 3
check "pods are selected by the chart's labels" \
  test "$(calls 'get pods -l app.kubernetes.io/name=peerd,app.kubernetes.io/instance=peerd -o json')" = 3
check "progress is printed between polls" contains "waiting: 2 of 3 pods have P2PConnected"

# 2. One pod never connects: a timeout that says which pod.
scenario timeout events-one-never-connected.json
TIMEOUT_SECONDS=1 run_lib wait_for_event P2PConnected
check "wait fails on timeout" test $? = 1
check "timeout is reported" contains "Timeout: event 'P2PConnected' not seen on enough pods after 1s"
check "the pod that never connected is named" contains "pod peerd-tkj5k: no P2PConnected event yet"
check "the hint about peerd versions without events is printed" contains "PEERD_WAIT_EVENTS=0"

# 3. A reason under a misspelled key never counts: still a timeout.
scenario misspelled events-misspelled-reason.json
TIMEOUT_SECONDS=1 run_lib wait_for_event P2PConnected
check "a misspelled reason key does not satisfy the wait" test $? = 1
check "the misspelled case times out" contains "Timeout:"

# 4. P2PFailed stops the wait at once.
scenario failure events-one-never-connected.json events-failed.json events-all-connected.json
run_lib wait_for_event P2PConnected
check "wait fails on P2PFailed" test $? = 1
check "failure is reported with the event" contains "pod peerd-q2c45: P2PFailed"
check "no poll after the failure" test "$(calls ' get events ')" = 2
check "a failure is not called a timeout" lacks "Timeout"

# 5. kubectl failing transiently is retried.
scenario retry FAIL events-all-connected.json
run_lib wait_for_event P2PConnected
check "wait survives a failed kubectl call" test $? = 0
check "the failed call is retried" test "$(calls ' get events ')" = 2

# 6. P2PActive on at least one pod (the workload tests).
scenario active events-one-never-connected.json events-p2p-active.json
run_lib wait_for_event P2PActive 1
check "P2PActive on one pod is enough with MIN_PODS=1" test $? = 0
check "the active pod is named" contains "pod peerd-q2c45: P2PActive (count 2"

# 7. Jobs.
scenario job-ok
echo 3 >"$FAKE_DIR/job.completions"
printf ' \n1 \n3 \n' >"$FAKE_DIR/job.states"
run_lib wait_for_job random
check "job wait succeeds at 3/3" test $? = 0
check "job success reported" contains "job/random: 3/3 succeeded"
scenario job-failed
echo 3 >"$FAKE_DIR/job.completions"
printf '1 \n1 1\n' >"$FAKE_DIR/job.states"
run_lib wait_for_job random
check "job wait fails when a pod failed" test $? = 1
check "job failure reported" contains "Failure: job/random has 1 failed pod(s)"
scenario job-timeout
echo 3 >"$FAKE_DIR/job.completions"
printf '2 \n' >"$FAKE_DIR/job.states"
TIMEOUT_SECONDS=1 run_lib wait_for_job random
check "job wait times out" test $? = 1
check "job timeout reported" contains "Timeout: job/random has 2/3 succeeded after 1s"

# 8. Manifests render with every placeholder given, and refuse a missing one.
scenario render
run_lib render_manifest "$here/../manifests/random.yaml" NODE_COUNT=3 TIMEOUT_SECONDS=300 RANDOM_IMAGE=peerd-random:dev \
  BLOB_URL=http://blob-origin.peerd-ns.svc.cluster.local/blob.bin
check "random.yaml renders" test $? = 0
check "rendered manifest has no placeholder left" lacks '${'
check "completions substituted" contains "completions: 3"
check "kubelet variables are left for the kubelet" contains '--peerd=http://$(NODE_IP):5000'
run_lib render_manifest "$here/../manifests/random.yaml" NODE_COUNT=3
check "a missing placeholder value fails" test $? != 0
check "the missing placeholder is named" contains 'uses ${TIMEOUT_SECONDS}'

# 9. Image names.
scenario images
(
  # shellcheck source-path=SCRIPTDIR source=../scripts/kind.sh
  source "$here/../scripts/kind.sh"
  for image in peerd:dev localhost:5000/peerd:dev ghcr.io/org/peerd peerd; do
    echo "$image -> $(image_repository "$image") $(image_tag "$image")"
  done
) >"$FAKE_DIR/out" 2>&1
check "plain image" contains "peerd:dev -> peerd dev"
check "registry with a port" contains "localhost:5000/peerd:dev -> localhost:5000/peerd dev"
check "no tag means latest" contains "ghcr.io/org/peerd -> ghcr.io/org/peerd latest"

# 10. kind.sh deploy end to end against the fakes.
scenario deploy events-none-connected.json events-all-connected.json
POLL_SECONDS=0 "$here/../scripts/kind.sh" deploy >"$FAKE_DIR/out" 2>&1
check "deploy succeeds once pods connect" test $? = 0
check "deploy loads the image into the cluster" test "$(calls 'kind load docker-image peerd:dev --name peerd')" = 1
check "deploy installs the chart with the kind values and the image" test "$(grep -c \
  "^helm upgrade --install peerd $(cd "$here/../.." && pwd)/charts/peerd --kube-context kind-peerd --namespace peerd-ns --create-namespace --values $(cd "$here/.." && pwd)/values.yaml --set-string image.repository=peerd --set-string image.tag=dev$" \
  "$FAKE_DIR/calls.log")" = 1
check "deploy waits for the rollout" test "$(calls 'rollout status daemonset/peerd --timeout 300s')" = 1
check "deploy prints the original success line" contains "Success: event 'P2PConnected' seen on enough pods."
scenario deploy-no-events
PEERD_WAIT_EVENTS=0 "$here/../scripts/kind.sh" deploy >"$FAKE_DIR/out" 2>&1
check "deploy with PEERD_WAIT_EVENTS=0 succeeds on readiness" test $? = 0
check "deploy with PEERD_WAIT_EVENTS=0 reads no events" test "$(calls ' get events ')" = 0
scenario deploy-no-cluster
FAKE_KIND_CLUSTERS=other "$here/../scripts/kind.sh" deploy >"$FAKE_DIR/out" 2>&1
check "deploy without a cluster fails" test $? = 1
check "deploy without a cluster says what to do" contains "no kind cluster 'peerd': run make kind-create"

# 11. Peer bytes from the metrics (the fallback for P2PActive).
scenario metrics
cat >"$FAKE_DIR/metrics.txt" <<'EOF'
# HELP peerd_bytes_fetched_total Bytes this node fetched, by source.
# TYPE peerd_bytes_fetched_total counter
peerd_bytes_fetched_total{source="peer"} 1.6777216e+07
peerd_bytes_fetched_total{source="upstream"} 4194304
peerd_bytes_fetched_total{source="cache"} 0
EOF
(
  # shellcheck source-path=SCRIPTDIR source=../scripts/kind.sh
  source "$here/../scripts/kind.sh"
  p2p_bytes
) >"$FAKE_DIR/out" 2>&1
check "peer bytes found in the metrics" test $? = 0
check "peer bytes summed per pod (scientific notation)" contains "16777216"

total=$((passed + failed))
if [ "$failed" = 0 ]; then
  echo "wait_test: PASS ($passed/$total checks)"
else
  echo "wait_test: FAIL ($failed of $total checks failed)"
  exit 1
fi
