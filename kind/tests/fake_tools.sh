#!/usr/bin/env bash
# Stand-ins for kubectl, kind, helm and docker in kind/tests/wait_test.sh, dispatched on the name they are called
# by (symlinks). Every call is appended to $FAKE_DIR/calls.log. Answers come from files in $FAKE_DIR:
#   pods.json                       `kubectl get pods ... -o json`
#   events.list                     one fixture path per line: the Nth `kubectl get events` prints line N (the
#                                   last line repeats); a line "FAIL" makes that call fail
#   job.completions, job.states     `kubectl get job`: .spec.completions, then one "succeeded failed" line per
#                                   poll (the last line repeats)
#   metrics.txt                     `kubectl get --raw .../proxy/metrics`
set -euo pipefail
tool=$(basename "$0")
dir=${FAKE_DIR:?FAKE_DIR not set}
echo "$tool $*" >>"$dir/calls.log"

# next_line FILE COUNTER: line number <counter> of FILE (the last one once exhausted); bumps the counter.
next_line() {
  local file=$1 counter=$dir/$2.count n lines
  n=$(cat "$counter" 2>/dev/null || echo 0)
  n=$((n + 1))
  echo "$n" >"$counter"
  lines=$(wc -l <"$file")
  [ "$n" -le "$lines" ] || n=$lines
  sed -n "${n}p" "$file"
}

case $tool in
  kubectl)
    args=" $* "
    if [[ $args == *" get pods "* && $args == *" -o json "* ]]; then
      cat "$dir/pods.json"
    elif [[ $args == *" get pods "* && $args == *"jsonpath={.items[*].metadata.name}"* ]]; then
      echo "peerd-5trwv peerd-q2c45 peerd-tkj5k"
    elif [[ $args == *" get events "* ]]; then
      fixture=$(next_line "$dir/events.list" events)
      if [ "$fixture" = FAIL ]; then
        echo "The connection to the server 127.0.0.1:6443 was refused" >&2
        exit 1
      fi
      cat "$fixture"
    elif [[ $args == *" get job "* && $args == *"spec.completions"* ]]; then
      cat "$dir/job.completions"
    elif [[ $args == *" get job "* ]]; then
      next_line "$dir/job.states" job
    elif [[ $args == *" get --raw "*"/proxy/metrics"* ]]; then
      cat "$dir/metrics.txt"
    elif [[ $args == *" get daemonset "* ]]; then
      echo 3
    fi
    ;;
  kind)
    if [ "${1:-}" = get ] && [ "${2:-}" = clusters ]; then echo "${FAKE_KIND_CLUSTERS:-peerd}"; fi
    ;;
  helm | docker) ;;
  *)
    echo "fake_tools: unknown tool $tool" >&2
    exit 1
    ;;
esac
