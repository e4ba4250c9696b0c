#!/usr/bin/env bash
# Tests kind/scripts/p2p_events.py (the event parsing behind the kind waits) on kubectl payloads in
# fixtures/: each case gives a pods and an events file and expects an exit status and lines in the report.
# Then it mutates the script the way real bugs would (reading `.resosn` instead of `.reason` as the original
# peerd's wait script did, ignoring the pod uid, counting terminating pods, ignoring failure events) and
# requires the cases to catch every mutant. Prints one verdict line; exits 1 on failure.
# PYTHON selects the interpreter (default python3; only the standard library is used).
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
fixtures=$here/fixtures
script=$here/../scripts/p2p_events.py
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Each case: name | events fixture | pods fixture | extra args | expected exit | expected lines ("; "-separated,
# a leading "!" means the line must NOT appear).
cases=(
  "every pod connected|events-all-connected.json|pods.json||0|pod peerd-5trwv: P2PConnected; pod peerd-q2c45: P2PConnected; pod peerd-tkj5k: P2PConnected; ok: 3 of 3 pods; !peerd-old7x"
  "no events yet|events-empty.json|pods.json||1|waiting: 0 of 3 pods"
  "kubelet events only|events-none-connected.json|pods.json||1|pod peerd-5trwv: no P2PConnected event yet; waiting: 0 of 3"
  "no pods yet|events-all-connected.json|pods-empty.json||1|waiting: 0 of 0 pods"
  "one pod never connected|events-one-never-connected.json|pods.json||1|pod peerd-tkj5k: no P2PConnected event yet; pod peerd-5trwv: P2PConnected; waiting: 2 of 3"
  "one pod never connected, two needed|events-one-never-connected.json|pods.json|--min-pods 2|0|ok: 2 of 3 pods"
  "reason under a misspelled key|events-misspelled-reason.json|pods.json||1|pod peerd-tkj5k: no P2PConnected event yet; waiting: 2 of 3"
  "a pod failed after connecting|events-failed.json|pods.json||2|pod peerd-q2c45: P2PFailed at 2024-03-07T21:49:05Z; failed: 1 of 3"
  "a pod lost its peers and joined again|events-reconnected.json|pods.json||0|ok: 3 of 3 pods; !failed"
  "failures ignored on request|events-failed.json|pods.json|--fail-reasons=|0|ok: 3 of 3"
  "event of an earlier pod with the same name|events-stale-uid.json|pods.json||1|pod peerd-tkj5k: no P2PConnected event yet"
  "raw API EventList|events-raw-eventlist.json|pods.json||0|ok: 3 of 3 pods"
  "P2PActive on one pod|events-p2p-active.json|pods.json|--reason P2PActive --min-pods 1|0|pod peerd-q2c45: P2PActive (count 2; pod peerd-5trwv: no P2PActive event yet; ok: 1 of 3"
  "P2PActive needed everywhere|events-p2p-active.json|pods.json|--reason P2PActive|1|waiting: 1 of 3"
  "PodList given as events|events-wrong-kind.json|pods.json||3|bad input"
  "pods given as events|pods.json|pods.json||3|is a Pod, not a Event"
  "not JSON|../events_test.sh|pods.json||3|bad input"
)

# run_cases SCRIPT QUIET: runs every case against SCRIPT; prints failures unless QUIET; echoes the failure count.
run_cases() {
  local candidate=$1 quiet=$2 failures=0 entry name events pods extra expected lines status output line
  for entry in "${cases[@]}"; do
    IFS='|' read -r name events pods extra expected lines <<<"$entry"
    status=0
    # shellcheck disable=SC2086 # extra holds several arguments
    output=$("$python" "$candidate" --events "$fixtures/$events" --pods "$fixtures/$pods" $extra 2>&1) || status=$?
    local problems=()
    [ "$status" = "$expected" ] || problems+=("exit $status, want $expected")
    IFS=';' read -ra wanted <<<"$lines"
    for line in "${wanted[@]}"; do
      line=${line# }
      if [[ $line == !* ]]; then
        if grep -qF -- "${line#!}" <<<"$output"; then problems+=("unexpected '${line#!}'"); fi
      elif ! grep -qF -- "$line" <<<"$output"; then
        problems+=("missing '$line'")
      fi
    done
    if [ ${#problems[@]} -gt 0 ]; then
      failures=$((failures + 1))
      if [ "$quiet" = 0 ]; then
        printf '  FAIL %s: %s\n' "$name" "$(IFS=,; echo "${problems[*]}")" >&2
        printf '%s\n' "$output" | sed 's/^/       | /' >&2
      fi
    fi
  done
  echo "$failures"
}

failures=$(run_cases "$script" 0)
echo "cases: $((${#cases[@]} - failures))/${#cases[@]} pass"

# Mutants: name | python replacement (old => new) applied to a copy of the script.
mutants=(
  'reads .resosn (the original bug)|event.get("reason")=>event.get("resosn")'
  'ignores the pod uid|if uid and subject.get("uid") and subject["uid"] != uid:=>if False:'
  'counts terminating pods|if metadata.get("deletionTimestamp"):=>if False:'
  'ignores failure events|if failed:=>if False:'
  'keeps failures after a reconnection|failures = []=>pass'
)
caught=0
for entry in "${mutants[@]}"; do
  name=${entry%%|*}
  change=${entry#*|}
  mutant=$work/mutant.py
  "$python" - "$script" "$mutant" "$change" <<'PY'
import sys
source, target, change = sys.argv[1], sys.argv[2], sys.argv[3]
old, new = change.split("=>", 1)
text = open(source).read()
if old not in text:
    sys.exit(f"mutation anchor not found in {source}: {old}")
open(target, "w").write(text.replace(old, new))
PY
  if [ "$(run_cases "$mutant" 1)" -gt 0 ]; then
    caught=$((caught + 1))
  else
    echo "  FAIL mutant not caught: $name" >&2
  fi
done
echo "mutants: $caught/${#mutants[@]} caught"

if [ "$failures" = 0 ] && [ "$caught" = ${#mutants[@]} ]; then
  echo "events_test: PASS (${#cases[@]} fixture cases, ${#mutants[@]}/${#mutants[@]} mutants of p2p_events.py caught)"
else
  echo "events_test: FAIL ($failures of ${#cases[@]} cases failed, $caught of ${#mutants[@]} mutants caught)"
  exit 1
fi
