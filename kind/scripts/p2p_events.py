#!/usr/bin/env python3
"""Which peerd pods have reported a P2P event: reads `kubectl get pods -o json` and `kubectl get events -o json`.

    p2p_events.py --pods PODS.json --events EVENTS.json [--reason P2PConnected] [--min-pods N]
                  [--fail-reasons P2PFailed,P2PDisconnected]

A pod has the event when an Event's involvedObject (or `regarding`, for events.k8s.io objects) is that Pod (kind,
name, namespace and, when both sides carry one, uid, so an old pod's events do not count for a new pod of the same
name) and the Event's `reason` field is exactly the reason asked for. Only `reason` is read: an item whose reason
is missing or spelled differently does not count (the original peerd's wait script read `.resosn` and never saw a
failure).

Prints one line per pod and a summary. Exit status:
  0  at least --min-pods pods (default: every pod, and at least one) have the reason;
  1  not yet (keep waiting);
  2  a pod reported a failure reason (--fail-reasons): stop waiting;
  3  the input is not what kubectl prints (not JSON, not a v1 List/EventList/PodList, items without metadata).
Only the Python standard library is used (kind users may not have jq).
"""

import argparse
import json
import sys

EXIT_DONE, EXIT_WAITING, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2, 3


class BadInput(Exception):
    pass


def load_list(path, item_kind):
    """The items of a `kubectl get <kind> -o json` payload (kind List) or of the raw API list (<Kind>List)."""
    try:
        with (sys.stdin if path == "-" else open(path)) as handle:
            payload = json.load(handle)
    except (OSError, ValueError) as error:
        raise BadInput(f"{path}: {error}") from None
    if not isinstance(payload, dict) or payload.get("apiVersion") != "v1" or \
            payload.get("kind") not in ("List", f"{item_kind}List"):
        raise BadInput(f"{path}: not a v1 List or {item_kind}List")
    items = payload.get("items")
    if not isinstance(items, list):
        raise BadInput(f"{path}: items is not a list")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
            raise BadInput(f"{path}: item {index} has no metadata")
        if item.get("kind", item_kind) != item_kind:
            raise BadInput(f"{path}: item {index} is a {item.get('kind')}, not a {item_kind}")
    return items


def live_pods(pod_items):
    """(name, namespace, uid) of pods that exist and are not being deleted."""
    pods = []
    for pod in pod_items:
        metadata = pod["metadata"]
        if metadata.get("deletionTimestamp"):
            continue
        if not metadata.get("name"):
            raise BadInput("a pod without a name")
        pods.append((metadata["name"], metadata.get("namespace"), metadata.get("uid")))
    return sorted(pods)


def event_subject(event):
    subject = event.get("involvedObject")
    if subject is None:
        subject = event.get("regarding")  # events.k8s.io/v1 shape
    if not isinstance(subject, dict):
        raise BadInput(f"event {event['metadata'].get('name')!r} has no involvedObject")
    return subject


def event_time(event):
    return event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or ""


def is_about(event, pod):
    name, namespace, uid = pod
    subject = event_subject(event)
    if subject.get("kind") != "Pod" or subject.get("name") != name:
        return False
    if namespace and subject.get("namespace") and subject["namespace"] != namespace:
        return False
    if uid and subject.get("uid") and subject["uid"] != uid:
        return False
    return True


RECONNECTED = "P2PConnected"


def report(pods, events, reason, fail_reasons):
    """Per pod: the newest event with `reason` and the newest failure event; and the lines to print."""
    lines, connected, failed = [], 0, 0
    for pod in pods:
        about = [event for event in events if is_about(event, pod)]
        hits = sorted((event for event in about if event.get("reason") == reason), key=event_time)
        failures = sorted((event for event in about if event.get("reason") in fail_reasons), key=event_time)
        # peerd posts P2PDisconnected when it loses every peer and P2PConnected when it joins again: only a
        # failure newer than the pod's last (re)connection stops the wait.
        reconnections = sorted((event for event in about if event.get("reason") == RECONNECTED), key=event_time)
        if failures and reconnections and event_time(reconnections[-1]) > event_time(failures[-1]):
            failures = []
        if failures:
            failed += 1
            last = failures[-1]
            lines.append(f"pod {pod[0]}: {last.get('reason')} at {event_time(last) or '?'}: {last.get('message', '')}")
        elif hits:
            connected += 1
            last = hits[-1]
            count = sum(int(event.get("count") or 1) for event in hits)
            lines.append(f"pod {pod[0]}: {reason} (count {count}, last {event_time(last) or '?'})")
        else:
            lines.append(f"pod {pod[0]}: no {reason} event yet")
    return lines, connected, failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", required=True, help="kubectl get pods -o json output ('-' for stdin)")
    parser.add_argument("--events", required=True, help="kubectl get events -o json output ('-' for stdin)")
    parser.add_argument("--reason", default="P2PConnected")
    parser.add_argument("--min-pods", type=int, default=0, help="pods that must have the reason (0: all)")
    parser.add_argument("--fail-reasons", default="P2PFailed,P2PDisconnected",
                        help="comma-separated reasons that stop the wait ('' for none)")
    options = parser.parse_args(argv)
    fail_reasons = {reason for reason in options.fail_reasons.split(",") if reason}
    try:
        pods = live_pods(load_list(options.pods, "Pod"))
        events = load_list(options.events, "Event")
        lines, connected, failed = report(pods, events, options.reason, fail_reasons)
    except BadInput as error:
        print(f"p2p_events: bad input: {error}")
        return EXIT_BAD_INPUT
    for line in lines:
        print(line)
    needed = options.min_pods or len(pods)
    if failed:
        print(f"failed: {failed} of {len(pods)} pods reported {'/'.join(sorted(fail_reasons))}")
        return EXIT_FAILED
    if pods and connected >= needed:
        print(f"ok: {connected} of {len(pods)} pods have {options.reason} (needed {needed})")
        return EXIT_DONE
    print(f"waiting: {connected} of {len(pods)} pods have {options.reason} (need {max(needed, 1)})")
    return EXIT_WAITING


if __name__ == "__main__":
    sys.exit(main())
