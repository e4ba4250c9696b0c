#!/usr/bin/env bash
# Every packaging test that needs no cluster: kind scripts (event parsing, waits, deploy against fakes), kind
# config + workload manifests + Dockerfile (static_test.py), and shellcheck on the kind scripts when installed.
# PYTHON selects the interpreter (default python3); the tests use python3-yaml and the standard library.
set -uo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
export PYTHON=$python
status=0
run() {
  echo "== $*"
  "$@" || status=1
}
run "$here/events_test.sh"
run "$here/wait_test.sh"
run "$python" "$here/static_test.py"
if command -v shellcheck >/dev/null 2>&1; then
  run shellcheck -x "$here"/../scripts/*.sh "$here"/../local/*.sh "$here"/*.sh
  [ "$status" = 0 ] && echo "shellcheck: clean"
else
  echo "shellcheck: not installed, skipped (apt-get install shellcheck)"
fi
if [ "$status" = 0 ]; then echo "kind tests: PASS"; else echo "kind tests: FAIL"; fi
exit "$status"
