#!/usr/bin/env python3
"""Checks the peerd helm chart without a cluster or helm (Debian packages only: python3-yaml, python3-jsonschema).

1. Schema: values.schema.json is valid draft-07; values.yaml and a few good variants pass it; a list of bad values
   (wrong types, out-of-range ports, typos in keys, flags the chart already sets...) is rejected.
2. Template references: every `.Values.x.y` the templates read exists in values.yaml (a typo renders as an
   empty string in helm, silently).
3. Rendering: the templates are rendered with gotemplate.py (the Go-template subset the chart uses) for several
   value sets, including kind/values.yaml (what `make kind-deploy` installs); every document must be YAML, and
   the objects are checked: DaemonSet (ports, protocols, probes, resources, security context, downward-API env,
   every $(VAR) defined, hostPath volumes and mounts, peerd flags known to peerd/daemon/options.cc and wired to
   the values, the --bootstrap name = the headless Service), headless
   Service (clusterIP None, publishNotReadyAddresses, selector, ports), RBAC verbs and bindings, ServiceAccount,
   ServiceMonitor. A value set that cannot work (mirror configuration with no way for containerd to reach the
   pod) must fail to render.
4. Mutations: known mistakes are injected into the rendered objects (a missing port, a TCP router port, a
   non-headless Service, a missing RBAC verb, ...); each one must be reported, so the checks are not vacuous.
Prints what failed, then one verdict line; exits 1 on any failure.
"""

import copy
import json
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gotemplate  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CHART = os.path.join(ROOT, "charts", "peerd")
OPTIONS_SOURCE = os.path.join(ROOT, "peerd", "daemon", "options.cc")
NAMESPACE = "peerd-ns"

try:
    import jsonschema
except ImportError:
    print("chart_test: FAIL (python3-jsonschema is not installed: apt-get install python3-jsonschema)")
    sys.exit(1)

problems = []


def problem(message):
    problems.append(message)
    print("  FAIL " + message)


# ---- inputs ---------------------------------------------------------------------------------------------

def load_yaml(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def merge(base, override):
    """Helm's coalescing: maps merge key by key, anything else replaces; None deletes a key."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def known_peerd_flags():
    """The flags `peerd run` accepts, from its flag table (source of truth for --help)."""
    with open(OPTIONS_SOURCE) as handle:
        flags = set(re.findall(r'\{"(--[a-z0-9-]+)",\s*FlagArity::', handle.read()))
    if len(flags) < 10:
        raise SystemExit(f"chart_test: FAIL (found only {len(flags)} flags in {OPTIONS_SOURCE})")
    return flags


def template_sources():
    directory = os.path.join(CHART, "templates")
    return {name: open(os.path.join(directory, name)).read() for name in sorted(os.listdir(directory))}


def render(values, release="peerd"):
    """Renders every template; returns ({file: text}, [objects])."""
    chart = load_yaml(os.path.join(CHART, "Chart.yaml"))
    data = {
        "Values": values,
        "Release": {"Name": release, "Namespace": NAMESPACE, "Service": "Helm", "IsInstall": True,
                    "IsUpgrade": False, "Revision": 1},
        "Chart": {key[0].upper() + key[1:]: value for key, value in chart.items()},
        "Capabilities": {"KubeVersion": {"Version": "v1.29.0", "Major": "1", "Minor": "29"}},
    }
    renderer = gotemplate.Renderer()
    sources = template_sources()
    for name, source in sources.items():
        renderer.add(name, source)
    texts, objects = {}, []
    for name in sources:
        if name.startswith("_"):
            continue
        data["Template"] = {"Name": f"peerd/templates/{name}", "BasePath": "peerd/templates"}
        texts[name] = renderer.render(name, data)
        if name.endswith((".yaml", ".yml")):
            for document in yaml.safe_load_all(texts[name]):
                if document is not None:
                    document["__file"] = name
                    objects.append(document)
    return texts, objects


# ---- object checks ------------------------------------------------------------------------------------------

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}


def only(objects, kind, errors):
    found = [obj for obj in objects if obj.get("kind") == kind]
    if len(found) != 1:
        errors.append(f"expected one {kind}, rendered {len(found)}")
        return None
    return found[0]


def parse_args(args):
    """--flag=value arguments -> [(flag, value)] (peerd also takes `--flag value`; the chart always uses =)."""
    parsed = []
    for arg in args:
        flag, _, value = str(arg).partition("=")
        parsed.append((flag, value))
    return parsed


def check_common(objects, errors):
    for obj in objects:
        metadata = obj.get("metadata") or {}
        where = f"{obj.get('__file')}: {obj.get('kind')}/{metadata.get('name')}"
        if not obj.get("apiVersion") or not obj.get("kind"):
            errors.append(f"{where}: apiVersion and kind are required")
        name = str(metadata.get("name", ""))
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 63:
            errors.append(f"{where}: name {name!r} is not a DNS name of at most 63 characters")
        if obj.get("kind") in CLUSTER_SCOPED:
            if "namespace" in metadata:
                errors.append(f"{where}: cluster-scoped object with a namespace")
        elif metadata.get("namespace") != NAMESPACE:
            errors.append(f"{where}: namespace {metadata.get('namespace')!r}, want the release's {NAMESPACE!r}")
        labels = metadata.get("labels") or {}
        for label in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
            if label not in labels:
                errors.append(f"{where}: label {label} missing")


def check_daemonset(objects, values, flags_known, errors):
    daemonset = only(objects, "DaemonSet", errors)
    service = only(objects, "Service", errors)
    if daemonset is None:
        return
    if daemonset.get("apiVersion") != "apps/v1":
        errors.append(f"DaemonSet apiVersion {daemonset.get('apiVersion')!r}")
    spec = daemonset.get("spec", {})
    template = spec.get("template", {})
    pod_labels = template.get("metadata", {}).get("labels") or {}
    selector = spec.get("selector", {}).get("matchLabels") or {}
    if not selector or any(pod_labels.get(key) != value for key, value in selector.items()):
        errors.append(f"DaemonSet selector {selector} does not match the pod labels {pod_labels}")
    pod = template.get("spec", {})
    containers = pod.get("containers") or []
    if len(containers) != 1 or containers[0].get("name") != "peerd":
        errors.append("DaemonSet must run exactly one container named peerd")
        return
    container = containers[0]
    chart = load_yaml(os.path.join(CHART, "Chart.yaml"))
    image = f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
    if container.get("image") != image:
        errors.append(f"image {container.get('image')!r}, want {image!r}")

    host_network = bool(pod.get("hostNetwork"))
    if host_network != values["hostNetwork"]:
        errors.append(f"hostNetwork is {host_network}, values say {values['hostNetwork']}")
    if host_network and pod.get("dnsPolicy") != "ClusterFirstWithHostNet":
        errors.append("hostNetwork without dnsPolicy ClusterFirstWithHostNet: the bootstrap name will not resolve")

    # Ports: name -> (number, protocol).
    want_ports = {"http": (values["ports"]["http"], "TCP"), "router": (values["ports"]["router"], "UDP"),
                  "metrics": (values["ports"]["metrics"], "TCP")}
    peer_tls = bool(values["peerd"]["peerTls"]["secretName"])
    if peer_tls:
        want_ports["peer"] = (values["ports"]["peer"], "TCP")
    ports = {port.get("name"): port for port in container.get("ports") or []}
    for name, (number, protocol) in want_ports.items():
        port = ports.get(name)
        if port is None:
            errors.append(f"container port {name!r} missing")
            continue
        if port.get("containerPort") != number:
            errors.append(f"container port {name} is {port.get('containerPort')}, want {number}")
        if port.get("protocol", "TCP") != protocol:
            errors.append(f"container port {name} protocol {port.get('protocol', 'TCP')}, want {protocol}")
    if set(ports) - set(want_ports):
        errors.append(f"unexpected container ports {sorted(set(ports) - set(want_ports))}")
    numbers = [(port.get("containerPort"), port.get("protocol", "TCP")) for port in ports.values()]
    if len(numbers) != len(set(numbers)):
        errors.append(f"two container ports share a number and protocol: {numbers}")
    host_port = (ports.get("http") or {}).get("hostPort")
    want_host_port = None if host_network or not values["httpHostPort"] else values["httpHostPort"]
    if host_port != want_host_port:
        errors.append(f"http hostPort {host_port}, want {want_host_port}")
    for name, port in ports.items():
        if host_network and "hostPort" in port and port["hostPort"] != port.get("containerPort"):
            errors.append(f"port {name}: with hostNetwork, hostPort must equal containerPort")

    # Probes.
    for probe_name, path, values_name in (("readinessProbe", "/readyz", "readiness"),
                                          ("livenessProbe", "/healthz", "liveness")):
        probe = container.get(probe_name) or {}
        http_get = probe.get("httpGet") or {}
        if http_get.get("path") != path:
            errors.append(f"{probe_name} path {http_get.get('path')!r}, want {path}")
        target = http_get.get("port")
        tcp_ports = {name for name, port in ports.items() if port.get("protocol", "TCP") == "TCP"}
        tcp_numbers = {ports[name].get("containerPort") for name in tcp_ports}
        if target not in tcp_ports and target not in tcp_numbers:
            errors.append(f"{probe_name} port {target!r} is not a TCP container port")
        for field, value in values["probes"][values_name].items():
            if probe.get(field) != value:
                errors.append(f"{probe_name}.{field} {probe.get(field)!r}, want {value!r}")

    # Downward API.
    env = {item.get("name"): item for item in container.get("env") or []}
    want_env = {"NODE_IP": "status.hostIP", "POD_IP": "status.podIP", "NODE_NAME": "spec.nodeName",
                "NAMESPACE": "metadata.namespace"}
    for name, field_path in want_env.items():
        got = ((env.get(name) or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        if got != field_path:
            errors.append(f"env {name} fieldPath {got!r}, want {field_path}")

    # Volumes and mounts.
    volumes = {volume.get("name"): volume for volume in pod.get("volumes") or []}
    mounts = {mount.get("mountPath"): mount.get("name") for mount in container.get("volumeMounts") or []}
    for path, name in mounts.items():
        if name not in volumes:
            errors.append(f"volumeMount {path} names volume {name!r}, which does not exist")

    def host_path_mount(host_path, host_type):
        """The container path where the node's host_path is mounted (None if it is not)."""
        for path, name in mounts.items():
            volume = volumes.get(name) or {}
            spec_path = (volume.get("hostPath") or {}).get("path")
            if spec_path == host_path:
                if (volume.get("hostPath") or {}).get("type") != host_type:
                    errors.append(f"hostPath {host_path} type {(volume.get('hostPath') or {}).get('type')!r}, "
                                  f"want {host_type}")
                return path
        return None

    hosts_dir = values["containerd"]["hostsConfigPath"]
    hosts_mount = host_path_mount(hosts_dir, "DirectoryOrCreate")
    if hosts_mount is None:
        errors.append(f"containerd hosts directory {hosts_dir} is not mounted")
    elif hosts_mount != hosts_dir:
        errors.append(f"containerd hosts directory mounted at {hosts_mount}, want the node path {hosts_dir}")
    socket_mount = host_path_mount(values["containerd"]["socketPath"], "Socket")
    if values["containerd"]["mountSocket"] and socket_mount != "/run/containerd/containerd.sock":
        errors.append(f"containerd socket mounted at {socket_mount!r}, want /run/containerd/containerd.sock")
    if not values["containerd"]["mountSocket"] and socket_mount is not None:
        errors.append("containerd socket mounted although containerd.mountSocket is false")
    content_root = values["containerd"]["contentRoot"]
    content_mount = host_path_mount(content_root, "Directory") if content_root else None
    if values["containerd"]["mountSocket"] and content_root and content_mount != content_root:
        errors.append(f"containerd content root {content_root} mounted at {content_mount!r}, want the node path")
    if content_mount is not None:
        read_only = [mount.get("readOnly") for mount in container.get("volumeMounts") or []
                     if mount.get("mountPath") == content_mount]
        if read_only != [True]:
            errors.append(f"containerd content root {content_mount} must be mounted read-only")
    cache_mount = host_path_mount(values["peerd"]["cache"]["hostPath"], "DirectoryOrCreate")
    if cache_mount is None:
        errors.append(f"cache hostPath {values['peerd']['cache']['hostPath']} is not mounted")

    # Arguments.
    args = parse_args(container.get("args") or [])
    flags = {}
    for flag, value in args:
        if flag not in flags_known:
            errors.append(f"argument {flag} is not a peerd flag (peerd/daemon/options.cc)")
        if flag in flags:
            errors.append(f"argument {flag} given twice")
        flags[flag] = value
        for variable in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
            if variable not in env:
                errors.append(f"argument {flag}={value} uses $({variable}), which is not in env (kubelet would "
                              "pass it literally)")
    ports_values = values["ports"]

    def want(flag, expected):
        if flags.get(flag) != expected:
            errors.append(f"{flag}={flags.get(flag)!r}, want {expected!r}")

    want("--http-addr", f"0.0.0.0:{ports_values['http']}")
    want("--router-addr", f"0.0.0.0:{ports_values['router']}")
    want("--metrics-addr", f"0.0.0.0:{ports_values['metrics']}")
    want("--node-ip", "$(POD_IP)")
    want("--log-level", values["peerd"]["logLevel"])
    want("--hosts", ",".join(values["peerd"]["hosts"]))
    want("--cache-size", values["peerd"]["cache"]["size"])
    want("--prefetch-workers", str(values["peerd"]["prefetchWorkers"]))
    if cache_mount is not None:
        want("--cache-dir", cache_mount)
    if values["peerd"]["bootstrap"]:
        want("--bootstrap", values["peerd"]["bootstrap"])
    elif service is not None:
        want("--bootstrap", f"{service['metadata']['name']}.{NAMESPACE}.svc.{values['clusterDomain']}:"
                            f"{ports_values['router']}")
    if values["containerd"]["mountSocket"]:
        want("--containerd-socket", socket_mount)
        want("--containerd-namespace", values["containerd"]["namespace"])
        want("--containerd-content-root", content_root or None)
        want("--resolve-tags", values["peerd"]["resolveTags"])
    else:
        want("--containerd-store", "false")
    if peer_tls:
        want("--peer-addr", f"0.0.0.0:{ports_values['peer']}")
        tls_mount = next((mount for mount in container.get("volumeMounts") or []
                          if mount.get("mountPath") == flags.get("--peer-tls-dir")), None)
        secret = ((volumes.get((tls_mount or {}).get("name")) or {}).get("secret") or {}).get("secretName")
        if tls_mount is None or not tls_mount.get("readOnly") or secret != values["peerd"]["peerTls"]["secretName"]:
            errors.append(f"--peer-tls-dir={flags.get('--peer-tls-dir')!r} is not the read-only mount of Secret "
                          f"{values['peerd']['peerTls']['secretName']}")
    elif "--peer-plaintext" not in flags:
        errors.append("no peerd.peerTls.secretName but no --peer-plaintext: peerd would refuse peers")
    if values["peerd"]["addMirrorConfiguration"]:
        want("--add-mirror-configuration", "true")
        want("--containerd-hosts-config-path", hosts_mount)
        if values["peerd"].get("mirrors"):
            want("--mirrors", ",".join(values["peerd"]["mirrors"]))
        elif host_network:
            want("--mirrors", f"http://127.0.0.1:{ports_values['http']}")
        else:
            want("--mirrors", f"http://$(NODE_IP):{host_port}")
    elif flags.get("--add-mirror-configuration") not in ("false", None):
        errors.append("--add-mirror-configuration set although peerd.addMirrorConfiguration is false")
    if values["peerd"].get("allowedUpstreams"):
        want("--allowed-upstreams", ",".join(values["peerd"]["allowedUpstreams"]))
    for extra in values["peerd"].get("extraArgs") or []:
        if str(extra) not in (container.get("args") or []):
            errors.append(f"extra argument {extra!r} missing")

    for field, key in (("resources", "resources"), ("securityContext", "securityContext")):
        if (container.get(field) or {}) != (values.get(key) or {}):
            errors.append(f"container {field} {container.get(field)!r} is not values.{key} {values.get(key)!r}")
    for field, key in (("nodeSelector", "nodeSelector"), ("tolerations", "tolerations"), ("affinity", "affinity"),
                       ("securityContext", "podSecurityContext")):
        if (pod.get(field) or type(values.get(key))()) != (values.get(key) or type(values.get(key))()):
            errors.append(f"pod {field} {pod.get(field)!r} is not values.{key} {values.get(key)!r}")
    security = container.get("securityContext") or {}
    if security.get("allowPrivilegeEscalation") is not False:
        errors.append("securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
        errors.append("securityContext must drop ALL capabilities")


def check_service(objects, values, errors):
    service = only(objects, "Service", errors)
    daemonset = only(objects, "DaemonSet", [])
    if service is None:
        return
    spec = service.get("spec", {})
    if spec.get("clusterIP") != "None":
        errors.append(f"Service clusterIP {spec.get('clusterIP')!r}: must be None (headless, one DNS record per pod)")
    if spec.get("publishNotReadyAddresses") is not True:
        errors.append("Service publishNotReadyAddresses must be true (pods turn ready only after bootstrapping "
                      "through it)")
    selector = spec.get("selector") or {}
    if daemonset is not None:
        pod_template = daemonset["spec"]["template"]
        pod_labels = pod_template["metadata"].get("labels") or {}
        if not selector or any(pod_labels.get(key) != value for key, value in selector.items()):
            errors.append(f"Service selector {selector} does not select the peerd pods {pod_labels}")
        container_ports = {port.get("name"): port for port in pod_template["spec"]["containers"][0].get("ports") or []}
    else:
        container_ports = {}
    ports = {port.get("name"): port for port in spec.get("ports") or []}
    want = {"router": (values["ports"]["router"], "UDP"), "http": (values["ports"]["http"], "TCP"),
            "metrics": (values["ports"]["metrics"], "TCP")}
    for name, (number, protocol) in want.items():
        port = ports.get(name)
        if port is None:
            errors.append(f"Service port {name} missing")
            continue
        if port.get("port") != number or port.get("protocol", "TCP") != protocol:
            errors.append(f"Service port {name} is {port.get('port')}/{port.get('protocol', 'TCP')}, "
                          f"want {number}/{protocol}")
        target = container_ports.get(port.get("targetPort"))
        if target is None or target.get("protocol", "TCP") != protocol:
            errors.append(f"Service port {name} targets {port.get('targetPort')!r}, not a {protocol} container port")


def rule_verbs(rules, group, resource):
    verbs = set()
    for rule in rules or []:
        if group in (rule.get("apiGroups") or []) and resource in (rule.get("resources") or []):
            verbs.update(rule.get("verbs") or [])
    return verbs


def check_rbac(objects, values, errors):
    daemonset = only(objects, "DaemonSet", [])
    account = daemonset["spec"]["template"]["spec"].get("serviceAccountName") if daemonset else None
    accounts = [obj for obj in objects if obj.get("kind") == "ServiceAccount"]
    if values["serviceAccount"]["create"]:
        if len(accounts) != 1 or accounts[0]["metadata"]["name"] != account:
            errors.append(f"ServiceAccount objects {[a['metadata']['name'] for a in accounts]} do not match the "
                          f"DaemonSet's serviceAccountName {account!r}")
    else:
        if accounts:
            errors.append("ServiceAccount rendered although serviceAccount.create is false")
        if account != (values["serviceAccount"]["name"] or "default"):
            errors.append(f"serviceAccountName {account!r}, want {values['serviceAccount']['name'] or 'default'!r}")

    kinds = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    if not values["rbac"]["create"]:
        for obj in objects:
            if obj.get("kind") in kinds:
                errors.append(f"{obj['kind']} rendered although rbac.create is false")
        return
    role = only(objects, "Role", errors)
    binding = only(objects, "RoleBinding", errors)
    cluster_role = only(objects, "ClusterRole", errors)
    cluster_binding = only(objects, "ClusterRoleBinding", errors)
    required = [
        (role, "coordination.k8s.io", "leases", {"get", "create", "update"}),
        (role, "", "events", {"create", "patch"}),
        (cluster_role, "", "pods", {"get", "list"}),
        (cluster_role, "", "nodes", {"get", "list"}),
    ]
    for obj, group, resource, verbs in required:
        if obj is None:
            continue
        granted = rule_verbs(obj.get("rules"), group, resource)
        if not verbs <= granted:
            errors.append(f"{obj['kind']} grants {sorted(granted)} on {group or 'core'}/{resource}, "
                          f"needs {sorted(verbs)}")
    for obj in (role, cluster_role):
        for rule in (obj or {}).get("rules") or []:
            if "*" in (rule.get("verbs") or []) or "*" in (rule.get("resources") or []):
                errors.append(f"{obj['kind']} uses a wildcard: {rule}")
            if "secrets" in (rule.get("resources") or []):
                errors.append(f"{obj['kind']} grants access to secrets")
            if obj is cluster_role and set(rule.get("verbs") or []) - {"get", "list", "watch"}:
                errors.append(f"ClusterRole must be read-only: {rule}")
    for bind, target in ((binding, role), (cluster_binding, cluster_role)):
        if bind is None or target is None:
            continue
        ref = bind.get("roleRef") or {}
        if ref.get("kind") != target["kind"] or ref.get("name") != target["metadata"]["name"] or \
                ref.get("apiGroup") != "rbac.authorization.k8s.io":
            errors.append(f"{bind['kind']} roleRef {ref} does not name {target['kind']}/{target['metadata']['name']}")
        subjects = bind.get("subjects") or []
        if not any(subject.get("kind") == "ServiceAccount" and subject.get("name") == account and
                   subject.get("namespace") == NAMESPACE for subject in subjects):
            errors.append(f"{bind['kind']} subjects {subjects} do not include ServiceAccount {NAMESPACE}/{account}")


def check_service_monitor(objects, values, errors):
    monitors = [obj for obj in objects if obj.get("kind") == "ServiceMonitor"]
    if not values["serviceMonitor"]["enabled"]:
        if monitors:
            errors.append("ServiceMonitor rendered although serviceMonitor.enabled is false")
        return
    if len(monitors) != 1:
        errors.append(f"expected one ServiceMonitor, rendered {len(monitors)}")
        return
    monitor, service = monitors[0], only(objects, "Service", [])
    if monitor.get("apiVersion") != "monitoring.coreos.com/v1":
        errors.append(f"ServiceMonitor apiVersion {monitor.get('apiVersion')!r}")
    spec = monitor.get("spec", {})
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = (service or {}).get("metadata", {}).get("labels") or {}
    if not selector or any(labels.get(key) != value for key, value in selector.items()):
        errors.append(f"ServiceMonitor selector {selector} does not select the Service (labels {labels})")
    if NAMESPACE not in ((spec.get("namespaceSelector") or {}).get("matchNames") or []):
        errors.append("ServiceMonitor namespaceSelector misses the release namespace")
    service_ports = {port.get("name") for port in (service or {}).get("spec", {}).get("ports") or []}
    for endpoint in spec.get("endpoints") or []:
        if endpoint.get("port") not in service_ports or endpoint.get("path") != "/metrics":
            errors.append(f"ServiceMonitor endpoint {endpoint} is not the Service's metrics port at /metrics")
    for key, value in (values["serviceMonitor"].get("labels") or {}).items():
        if monitor["metadata"].get("labels", {}).get(key) != value:
            errors.append(f"ServiceMonitor label {key}={value} missing")


def check_objects(objects, values, flags_known):
    errors = []
    check_common(objects, errors)
    check_daemonset(objects, values, flags_known, errors)
    check_service(objects, values, errors)
    check_rbac(objects, values, errors)
    check_service_monitor(objects, values, errors)
    return errors


# ---- the test -----------------------------------------------------------------------------------------------

# Value sets that must validate, render and pass every check (overrides of values.yaml).
VARIANTS = {
    "defaults": ({}, "peerd"),
    "host network, every node": ({"hostNetwork": True, "tolerations": [{"operator": "Exists"}],
                                  "priorityClassName": "system-node-critical"}, "peerd"),
    "monitoring, no RBAC, explicit mirrors": ({
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "rbac": {"create": False}, "serviceAccount": {"create": False, "name": "custom"},
        "containerd": {"mountSocket": False},
        "peerd": {"mirrors": ["http://$(NODE_IP):30000"], "allowedUpstreams": ["*.blob.core.windows.net", "origin:80"],
                  "extraArgs": ["--chunk-size=4MiB", "--upstream-retries=5"], "logLevel": "debug",
                  "hosts": ["https://ghcr.io", "docker.io"], "cache": {"size": "512MiB", "hostPath": "/mnt/peerd"}},
        "ports": {"http": 30000, "router": 30003, "metrics": 30004}, "httpHostPort": 30000,
        "image": {"repository": "ghcr.io/example/peerd", "tag": "v1.2.3", "pullPolicy": "Always"},
    }, "edge"),
    "no mirror configuration, no host port": ({"peerd": {"addMirrorConfiguration": False}, "httpHostPort": 0},
                                              "peerd"),
    "mutual TLS, lease bootstrap, tags from the image store, gRPC content": ({
        "peerd": {"peerTls": {"secretName": "peerd-ca"}, "bootstrap": "k8s-lease", "resolveTags": "ttl:10m"},
        "containerd": {"contentRoot": "", "namespace": "custom"}, "ports": {"peer": 6443}}, "peerd"),
}

# Value sets that pass the schema but cannot work: rendering must fail (helm install would stop there too).
MUST_NOT_RENDER = {
    "mirror configuration without any route from containerd to the pod":
        {"hostNetwork": False, "httpHostPort": 0, "peerd": {"mirrors": []}},
}

# Values the schema must reject.
BAD_VALUES = {
    "router port as a string": {"ports": {"router": "5003"}},
    "http port out of range": {"ports": {"http": 70000}},
    "unknown log level": {"peerd": {"logLevel": "verbose"}},
    "cache size with a space": {"peerd": {"cache": {"size": "10 GB"}}},
    "cache size in a unit peerd rejects (Gi)": {"peerd": {"cache": {"size": "10Gi"}}},
    "no registries": {"peerd": {"hosts": []}},
    "registries as a string": {"peerd": {"hosts": "ghcr.io"}},
    "typo in a top-level key": {"hostnetwork": True},
    "typo in a nested key": {"peerd": {"prefetchWorker": 10}},
    "extra arg the chart sets (list flags add up)": {"peerd": {"extraArgs": ["--bootstrap=10.0.0.1:5003"]}},
    "extra arg that is not a long flag": {"peerd": {"extraArgs": ["-v"]}},
    "serviceMonitor toggle as a string": {"serviceMonitor": {"enabled": "yes"}},
    "unknown pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "too many prefetch workers": {"peerd": {"prefetchWorkers": 2000}},
    "mirror without a scheme": {"peerd": {"mirrors": ["127.0.0.1:5000"]}},
    "relative containerd hosts directory": {"containerd": {"hostsConfigPath": "etc/containerd/certs.d"}},
    "probe period of zero": {"probes": {"readiness": {"periodSeconds": 0}}},
    "missing image section": {"image": None},
    "bad scrape interval": {"serviceMonitor": {"interval": "30"}},
    "unknown bootstrap mode": {"peerd": {"bootstrap": "lease"}},
    "tag policy without a duration": {"peerd": {"resolveTags": "ttl:"}},
    "relative containerd content root": {"containerd": {"contentRoot": "var/lib/containerd"}},
    "extra arg the chart sets (containerd socket)": {"peerd": {"extraArgs": ["--containerd-socket=/x.sock"]}},
}


def first_port(container, name):
    return next(port for port in container["ports"] if port["name"] == name)


def find(objects, kind):
    return next(obj for obj in objects if obj["kind"] == kind)


def container_of(objects):
    return find(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]


def set_arg(objects, flag, value):
    container = container_of(objects)
    container["args"] = [arg for arg in container["args"] if not arg.startswith(flag + "=")] + [f"{flag}={value}"]


# Mistakes injected into the rendered default objects; each must be reported by check_objects.
MUTATIONS = {
    "router port removed": lambda o: container_of(o)["ports"].remove(first_port(container_of(o), "router")),
    "router port over TCP": lambda o: first_port(container_of(o), "router").update(protocol="TCP"),
    "metrics port renumbered": lambda o: first_port(container_of(o), "metrics").update(containerPort=9090),
    "Service not headless": lambda o: find(o, "Service")["spec"].pop("clusterIP"),
    "Service hides not-ready pods": lambda o: find(o, "Service")["spec"].update(publishNotReadyAddresses=False),
    "Service selects other pods": lambda o: find(o, "Service")["spec"]["selector"].update(
        {"app.kubernetes.io/name": "other"}),
    "Service router port over TCP": lambda o: next(p for p in find(o, "Service")["spec"]["ports"]
                                                   if p["name"] == "router").update(protocol="TCP"),
    "Role cannot update leases": lambda o: find(o, "Role")["rules"][0]["verbs"].remove("update"),
    "Role cannot create events": lambda o: find(o, "Role")["rules"][1].update(verbs=["patch"]),
    "ClusterRole cannot list nodes": lambda o: find(o, "ClusterRole")["rules"][0].update(resources=["pods"]),
    "ClusterRole may delete pods": lambda o: find(o, "ClusterRole")["rules"][0]["verbs"].append("delete"),
    "ClusterRoleBinding subject in another namespace": lambda o: find(o, "ClusterRoleBinding")["subjects"][0].update(
        namespace="default"),
    "RoleBinding names another Role": lambda o: find(o, "RoleBinding")["roleRef"].update(name="nope"),
    "readiness probe on /ready": lambda o: container_of(o)["readinessProbe"]["httpGet"].update(path="/ready"),
    "liveness probe on the UDP port": lambda o: container_of(o)["livenessProbe"]["httpGet"].update(port="router"),
    "POD_IP env removed": lambda o: container_of(o).update(
        env=[e for e in container_of(o)["env"] if e["name"] != "POD_IP"]),
    "NODE_IP from the pod IP": lambda o: next(e for e in container_of(o)["env"] if e["name"] == "NODE_IP")[
        "valueFrom"]["fieldRef"].update(fieldPath="status.podIP"),
    "bootstrap on the HTTP port": lambda o: set_arg(o, "--bootstrap", "peerd.peerd-ns.svc.cluster.local:5000"),
    "bootstrap on a Service that does not exist": lambda o: set_arg(o, "--bootstrap",
                                                                     "peers.peerd-ns.svc.cluster.local:5003"),
    "misspelled flag": lambda o: container_of(o)["args"].append("--cache-dri=/var/cache/peerd"),
    "cache volume removed": lambda o: find(o, "DaemonSet")["spec"]["template"]["spec"].update(
        volumes=[v for v in find(o, "DaemonSet")["spec"]["template"]["spec"]["volumes"] if v["name"] != "cache"]),
    "containerd hosts directory mounted elsewhere": lambda o: next(
        m for m in container_of(o)["volumeMounts"] if m["name"] == "containerd-hosts").update(mountPath="/certs.d"),
    "selector not matching pod labels": lambda o: find(o, "DaemonSet")["spec"]["selector"]["matchLabels"].update(
        {"app.kubernetes.io/instance": "other"}),
    "object in the default namespace": lambda o: find(o, "Service")["metadata"].update(namespace="default"),
    "containerd content root writable": lambda o: next(
        m for m in container_of(o)["volumeMounts"] if m["name"] == "containerd-content").update(readOnly=False),
    "containerd namespace flag dropped": lambda o: container_of(o).update(
        args=[a for a in container_of(o)["args"] if not a.startswith("--containerd-namespace=")]),
    "plaintext peers without the explicit flag": lambda o: container_of(o).update(
        args=[a for a in container_of(o)["args"] if a != "--peer-plaintext"]),
}


def values_references(sources):
    """Every .Values path the templates read (absolute references only)."""
    paths = set()
    for source in sources.values():
        for match in re.finditer(r"(?<![A-Za-z0-9_])\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", source):
            paths.add(match.group(1).strip("."))
    return paths


def main():
    defaults = load_yaml(os.path.join(CHART, "values.yaml"))
    schema = json.load(open(os.path.join(CHART, "values.schema.json")))
    flags_known = known_peerd_flags()
    counts = {"variants": 0, "objects": 0, "bad": 0, "mutations": 0}

    print("schema")
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as error:
        problem(f"values.schema.json is not valid draft-07: {error.message}")
        return finish(counts)
    validator = jsonschema.Draft7Validator(schema)
    for error in validator.iter_errors(defaults):
        problem(f"values.yaml does not match the schema at {list(error.path)}: {error.message}")
    for key in schema["properties"]:
        if key != "global" and key not in defaults:
            problem(f"schema property {key!r} has no default in values.yaml")
    for name, override in BAD_VALUES.items():
        if not list(validator.iter_errors(merge(defaults, override))):
            problem(f"schema accepts bad values: {name} ({override})")
        else:
            counts["bad"] += 1

    print("template references")
    for path in sorted(values_references(template_sources())):
        node = defaults
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                problem(f"templates read .Values.{path}, which values.yaml does not define")
                break
            node = node[part]

    print("rendering")
    default_objects = None
    variants = dict(VARIANTS)
    # What `make kind-deploy` installs (kind/scripts/kind.sh: helm --values kind/values.yaml, image from PEERD_IMAGE).
    variants["kind/values.yaml"] = (load_yaml(os.path.join(ROOT, "kind", "values.yaml")), "peerd")
    counts["variant_total"] = len(variants)
    for name, (override, release) in variants.items():
        values = merge(defaults, override)
        schema_errors = [error.message for error in validator.iter_errors(values)]
        if schema_errors:
            problem(f"variant {name!r} does not match the schema: {schema_errors}")
            continue
        try:
            texts, objects = render(values, release)
        except (gotemplate.TemplateError, yaml.YAMLError) as error:
            problem(f"variant {name!r} does not render: {error}")
            continue
        counts["variants"] += 1
        counts["objects"] += len(objects)
        for error in check_objects(objects, values, flags_known):
            problem(f"variant {name!r}: {error}")
        if "NOTES.txt" in texts and "<no value>" in texts["NOTES.txt"]:
            problem(f"variant {name!r}: NOTES.txt prints <no value>")
        if name == "defaults":
            default_objects = objects
            kinds = sorted(obj["kind"] for obj in objects)
            print(f"  defaults render {len(objects)} objects: {', '.join(kinds)}")
    for name, override in MUST_NOT_RENDER.items():
        values = merge(defaults, override)
        try:
            render(values)
            problem(f"renders although it cannot work: {name}")
        except gotemplate.TemplateError as error:
            print(f"  refused as expected ({name}): {error}")

    print("mutations")
    if default_objects is not None:
        if check_objects(default_objects, defaults, flags_known):
            problem("default objects fail their own checks; mutations are meaningless")
        for name, mutate in MUTATIONS.items():
            objects = copy.deepcopy(default_objects)
            mutate(objects)
            if check_objects(objects, defaults, flags_known):
                counts["mutations"] += 1
            else:
                problem(f"mutation not caught: {name}")
    return finish(counts)


def finish(counts):
    variant_total = counts.get("variant_total", len(VARIANTS))
    summary = (f"{counts['variants']}/{variant_total} value sets rendered and checked ({counts['objects']} objects), "
               f"{counts['bad']}/{len(BAD_VALUES)} bad value sets rejected by the schema, "
               f"{counts['mutations']}/{len(MUTATIONS)} injected mistakes caught")
    if problems:
        print(f"chart_test: FAIL ({len(problems)} problems; {summary})")
        return 1
    print(f"chart_test: PASS ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
