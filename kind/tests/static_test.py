#!/usr/bin/env python3
"""Checks the kind cluster config, the workload manifests, the Dockerfile and .dockerignore without docker, kind
or a cluster (Debian's python3 and python3-yaml; dpkg and apt-cache for the optional library check).

kind/cluster.yaml    1 control plane + 3 workers; the containerd patch sets config_path to the directory the
                     chart mounts and peerd writes hosts.toml into.
kind/manifests/*     every placeholder is one kind.sh fills in; rendered, each is valid YAML; Jobs run one pod per
                     node (anti-affinity on their own labels, completions = parallelism = node count, no retries);
                     every flag passed to peerd-random / peerd-ctr is in that program's help text; the random
                     workload reads an origin that exists (blob-origin Service) and that peerd allows
                     (kind/values.yaml hosts) through the node port the chart opens; the ctr workload mounts the
                     socket and hosts directory and gets its image list from the ConfigMap.
Dockerfile           the stages exist and `COPY --from` names earlier ones; the default (last) stage is the
                     daemon with ENTRYPOINT ["/usr/local/bin/peerd", "run"]; build packages are the brief's list
                     and all come from scripts/install-deps.sh; benchmarks off; targets peerd, peerd-random,
                     peerd-ctr; the runtime user is not root; EXPOSE matches the chart's ports; and, when a
                     built binary is at hand, every shared library it loads comes from a package the runtime
                     stage installs (or its dependencies, or the slim base).
.dockerignore        build trees and .git stay out of the context; sources stay in.
Prints failures and one verdict line; exits 1 on failure. Checks that need a missing tool are reported as skipped.
"""

import fnmatch
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
KIND = os.path.dirname(HERE)
ROOT = os.path.dirname(KIND)

problems, skipped, checks = [], [], [0]


def check(condition, message):
    checks[0] += 1
    if not condition:
        problems.append(message)
        print("  FAIL " + message)
    return condition


def read(path):
    with open(os.path.join(ROOT, path)) as handle:
        return handle.read()


def chart_values():
    return yaml.safe_load(read("charts/peerd/values.yaml"))


# ---- kind/cluster.yaml ---------------------------------------------------------------------------------

def check_cluster():
    cluster = yaml.safe_load(read("kind/cluster.yaml"))
    check(cluster.get("kind") == "Cluster" and cluster.get("apiVersion") == "kind.x-k8s.io/v1alpha4",
          "cluster.yaml is not a kind.x-k8s.io/v1alpha4 Cluster")
    roles = [node.get("role") for node in cluster.get("nodes") or []]
    check(roles.count("control-plane") == 1 and roles.count("worker") == 3 and len(roles) == 4,
          f"cluster.yaml nodes {roles}: want 1 control-plane and 3 workers")
    patches = cluster.get("containerdConfigPatches") or []
    paths = []
    for patch in patches:
        try:
            config = tomllib.loads(patch)
        except tomllib.TOMLDecodeError as error:
            check(False, f"containerd patch is not TOML: {error}")
            continue
        registry = config.get("plugins", {}).get("io.containerd.grpc.v1.cri", {}).get("registry", {})
        if "config_path" in registry:
            paths.append(registry["config_path"])
    want = chart_values()["containerd"]["hostsConfigPath"]
    check(paths == [want], f"containerd config_path patches {paths}, want [{want!r}] (the chart's hostsConfigPath)")


# ---- kind/manifests --------------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def kind_sh_placeholders():
    """manifest file -> names kind.sh passes when rendering it (render_manifest and run_workload calls)."""
    text = read("kind/scripts/kind.sh").replace("\\\n", " ")
    given = {}
    for match in re.finditer(r'render_manifest "\$KIND_DIR/manifests/([\w.-]+)"((?:\s+[A-Z_]+=\S+)*)', text):
        given.setdefault(match.group(1), set()).update(re.findall(r"\s([A-Z_]+)=", match.group(2)))
    # run_workload renders its manifest with NODE_COUNT and TIMEOUT_SECONDS plus the caller's K=V arguments.
    implicit = set(re.findall(r'render_manifest "\$KIND_DIR/manifests/\$manifest"((?:\s+[A-Z_]+=\S+)*)', text)[0].split())
    implicit = {item.split("=")[0] for item in implicit}
    for match in re.finditer(r"^\s*run_workload \w+ ([\w.-]+\.yaml)((?:[ \t]+[A-Z_]+=\S+)*)", text, re.M):
        given.setdefault(match.group(1), set()).update(implicit | set(re.findall(r"\s([A-Z_]+)=", match.group(2))))
    return given


SAMPLE = {"NODE_COUNT": "3", "TIMEOUT_SECONDS": "300", "RANDOM_IMAGE": "peerd-random:dev",
          "CTR_IMAGE": "peerd-ctr:dev", "CTR_IMAGES": "mcr.microsoft.com/dotnet/runtime:8.0 ghcr.io/a/b:1",
          "BLOB_SIZE_MIB": "256", "BLOB_URL": "http://blob-origin.peerd-ns.svc.cluster.local/blob.bin"}


def render(name):
    return list(yaml.safe_load_all(PLACEHOLDER.sub(lambda match: SAMPLE[match.group(1)],
                                                   read(f"kind/manifests/{name}"))))


def help_flags(path):
    """Flags listed in a workload's help text (None when the source is not there yet)."""
    full = os.path.join(ROOT, path)
    if not os.path.exists(full):
        return None
    text = open(full).read()
    match = re.search(r'R"help\((.*?)\)help"', text, re.S)
    return set(re.findall(r"^\s+(--[a-z0-9-]+)", match.group(1), re.M)) if match else None


def flag_names(args):
    return [str(arg).split("=", 1)[0] for arg in args]


def check_job(job, name):
    spec = job["spec"]
    check(spec.get("completions") == spec.get("parallelism") == 3,
          f"job {name}: completions/parallelism must both be NODE_COUNT")
    check(spec.get("backoffLimit") == 0, f"job {name}: backoffLimit must be 0 (a failed pod fails the test)")
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    check(pod["spec"].get("restartPolicy") == "Never", f"job {name}: restartPolicy must be Never")
    terms = pod["spec"].get("affinity", {}).get("podAntiAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or []
    spread = any(term.get("topologyKey") == "kubernetes.io/hostname" and
                 all(labels.get(k) == v for k, v in term.get("labelSelector", {}).get("matchLabels", {}).items())
                 for term in terms)
    check(spread, f"job {name}: needs required pod anti-affinity on its own labels per hostname (one pod per node)")
    return pod["spec"]["containers"][0], pod["spec"]


def check_manifests():
    given = kind_sh_placeholders()
    for path in sorted(glob.glob(os.path.join(KIND, "manifests", "*.yaml"))):
        name = os.path.basename(path)
        used = set(PLACEHOLDER.findall(open(path).read()))
        check(used <= given.get(name, set()),
              f"{name} uses {sorted(used - given.get(name, set()))}, which kind.sh does not pass")
        try:
            render(name)
        except yaml.YAMLError as error:
            check(False, f"{name} does not render to YAML: {error}")
    kind_values = yaml.safe_load(read("kind/values.yaml"))
    chart = chart_values()
    host_port = kind_values.get("httpHostPort", chart["httpHostPort"])

    origin = {doc["kind"]: doc for doc in render("blob-origin.yaml")}
    service, deployment = origin.get("Service"), origin.get("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    check(all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items()),
          "blob-origin Service does not select the blob-origin pods")
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    check(all(p["targetPort"] in ports for p in service["spec"]["ports"]), "blob-origin Service targets a missing port")

    (job,) = [doc for doc in render("random.yaml") if doc["kind"] == "Job"]
    container, _ = check_job(job, "random")
    known = help_flags("workloads/random/random_options.cc")
    if known is None:
        skipped.append("random flags (workloads/random not present)")
    else:
        unknown = set(flag_names(container["args"])) - known
        check(not unknown, f"random.yaml passes {sorted(unknown)}, not flags of peerd-random")
    args = dict(str(arg).split("=", 1) for arg in container["args"] if "=" in str(arg))
    check(args.get("--peerd") == f"http://$(NODE_IP):{host_port}",
          f"random --peerd={args.get('--peerd')}: want the node port the chart opens ({host_port})")
    env = {item["name"] for item in container.get("env") or []}
    check("NODE_IP" in env, "random.yaml uses $(NODE_IP) without defining it in env")
    blob = re.match(r"https?://([^/:]+)", args.get("--blob", ""))
    if not check(blob is not None, "random.yaml passes no --blob=http(s)://... URL"):
        return
    blob_host = blob.group(1)
    check(blob_host.split(".")[0] == service["metadata"]["name"],
          f"random --blob host {blob_host} is not the blob-origin Service")
    hosts = [re.sub(r"^https?://", "", host).rstrip("/") for host in kind_values["peerd"]["hosts"]]
    check(blob_host in hosts, f"{blob_host} is not in kind/values.yaml peerd.hosts: peerd would refuse it (403)")
    check(f".{'peerd-ns'}.svc." in blob_host, "random --blob must name the origin in the peerd-ns namespace")

    docs = {doc["kind"]: doc for doc in render("ctr.yaml")}
    container, pod = check_job(docs["Job"], "ctr")
    known = help_flags("workloads/ctr/ctr_options.cc")
    if known is None:
        skipped.append("ctr flags (workloads/ctr not present)")
    else:
        unknown = set(flag_names(container["args"])) - known
        check(not unknown, f"ctr.yaml passes {sorted(unknown)}, not flags of peerd-ctr")
    args = dict(str(arg).split("=", 1) for arg in container["args"] if "=" in str(arg))
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    check(volumes.get(mounts.get(args.get("--address")), {}).get("hostPath", {}).get("type") == "Socket",
          "ctr --address is not the mounted containerd socket")
    hosts_dir = chart["containerd"]["hostsConfigPath"]
    check(args.get("--hosts-dir") == hosts_dir and
          volumes.get(mounts.get(hosts_dir), {}).get("hostPath", {}).get("path") == hosts_dir,
          f"ctr --hosts-dir must be the node's {hosts_dir}, mounted at the same path")
    images_file = args.get("--images-file", "")
    config_volume = volumes.get(mounts.get(os.path.dirname(images_file)), {})
    check(config_volume.get("configMap", {}).get("name") == docs["ConfigMap"]["metadata"]["name"] and
          os.path.basename(images_file) in docs["ConfigMap"]["data"],
          "ctr --images-file is not the ctr-images ConfigMap key")
    check(docs["ConfigMap"]["data"]["images"].split() == SAMPLE["CTR_IMAGES"].split(),
          "ctr-images ConfigMap does not carry CTR_IMAGES")
    check(args.get("--namespace") not in ("k8s.io", "moby"),
          "ctr must not use the kubelet's containerd namespace (--remove-first would delete cluster images)")
    check(pod.get("hostNetwork") is True and pod.get("dnsPolicy") == "ClusterFirstWithHostNet",
          "ctr pods need hostNetwork with ClusterFirstWithHostNet")


# ---- Dockerfile ----------------------------------------------------------------------------------------

def dockerfile_instructions():
    lines, current = [], ""
    for raw in read("Dockerfile").splitlines():
        if raw.strip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").rstrip() + " " if raw.endswith("\\") else raw
        if not raw.endswith("\\"):
            if current.strip():
                keyword, _, rest = current.strip().partition(" ")
                lines.append((keyword.upper(), rest.strip()))
            current = ""
    return lines


BUILD_PACKAGES = {"build-essential", "cmake", "ninja-build", "libboost-dev", "libcurl4-openssl-dev",
                  "nlohmann-json3-dev", "libssl-dev", "libgtest-dev", "libbenchmark-dev"}
SLIM_BASE = {"libc6", "libstdc++6", "libgcc-s1", "zlib1g", "gcc-12-base"}


def install_deps_packages():
    text = read("scripts/install-deps.sh")
    block = re.search(r"packages=\((.*?)\n\)", text, re.S).group(1)
    return {word for line in block.splitlines() for word in line.split("#")[0].split()}


def apt_installs(run):
    packages = set()
    for match in re.finditer(r"apt-get install ([^&;]*)", run):
        packages.update(word for word in match.group(1).split() if not word.startswith(("-", "$")))
    return packages


def check_dockerfile():
    instructions = dockerfile_instructions()
    args = {}
    stages, current = [], None
    for keyword, rest in instructions:
        if keyword == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default.strip('"')
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", rest, re.I)
            check(match is not None, f"Dockerfile FROM without a stage name: {rest}")
            if not match:
                continue
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), match.group(1))
            current = {"name": match.group(2), "base": base, "body": []}
            stages.append(current)
        elif current is not None:
            current["body"].append((keyword, rest))
    names = [stage["name"] for stage in stages]
    for required in ("toolchain", "source", "build-peerd", "build-random", "build-ctr", "runtime", "random", "ctr",
                     "peerd"):
        check(required in names, f"Dockerfile has no stage {required!r}")
    check(names and names[-1] == "peerd", "the last (default) Dockerfile stage must be peerd")
    for index, stage in enumerate(stages):
        earlier = names[:index]
        check(stage["base"] in earlier or stage["base"].startswith("debian:bookworm"),
              f"stage {stage['name']} builds on {stage['base']!r}: want debian:bookworm or an earlier stage")
        for keyword, rest in stage["body"]:
            if keyword == "COPY" and "--from=" in rest:
                source = re.search(r"--from=(\S+)", rest).group(1)
                check(source in earlier, f"stage {stage['name']} copies from {source!r}, not an earlier stage")
    by_name = {stage["name"]: stage for stage in stages}

    def runs(name):
        return " ".join(rest for keyword, rest in by_name.get(name, {"body": []})["body"] if keyword == "RUN")

    toolchain = apt_installs(runs("toolchain"))
    check(BUILD_PACKAGES <= toolchain, f"toolchain misses {sorted(BUILD_PACKAGES - toolchain)}")
    outside = toolchain - install_deps_packages()
    check(not outside, f"toolchain installs {sorted(outside)}, which scripts/install-deps.sh does not list")
    configure = runs("source")
    check("-DPEERD_BENCHMARKS=OFF" in configure and "cmake -S . -B /build -G Ninja" in configure,
          "source stage must configure /build with Ninja and -DPEERD_BENCHMARKS=OFF")
    for stage, target in (("build-peerd", "peerd"), ("build-random", "peerd-random"), ("build-ctr", "peerd-ctr")):
        check(re.search(rf"ninja -C /build {re.escape(target)}(\s|$)", runs(stage)) is not None,
              f"stage {stage} does not build target {target}")
    runtime = apt_installs(runs("runtime"))
    check({"ca-certificates", "libcurl4"} <= runtime, "runtime must install ca-certificates and libcurl4")
    users = [rest for keyword, rest in by_name["runtime"]["body"] if keyword == "USER"]
    check(users and users[-1].split(":")[0] not in ("0", "root"), "runtime stage must end as a non-root USER")
    final = dict(by_name["peerd"]["body"])
    check(json.loads(final.get("ENTRYPOINT", "null")) == ["/usr/local/bin/peerd", "run"],
          f"peerd ENTRYPOINT {final.get('ENTRYPOINT')}: want [\"/usr/local/bin/peerd\", \"run\"]")
    ports = chart_values()["ports"]
    want = {f"{ports['http']}/tcp", f"{ports['router']}/udp", f"{ports['metrics']}/tcp"}
    check(set(final.get("EXPOSE", "").split()) == want, f"EXPOSE {final.get('EXPOSE')}: want {sorted(want)}")
    check("/usr/local/bin/peerd" in final.get("COPY", ""), "peerd stage must copy the binary to /usr/local/bin")
    ctr_copies = " ".join(rest for keyword, rest in by_name["ctr"]["body"] if keyword == "COPY")
    check("containerd" in apt_installs(runs("ctr-tool")) and "--from=ctr-tool /usr/bin/ctr" in ctr_copies,
          "the ctr image needs the ctr binary (peerd-ctr runs it)")
    check_runtime_libraries(runtime)


def check_runtime_libraries(runtime_packages):
    """Every library a built binary loads must come from the runtime's packages, their dependencies or the base."""
    if not (shutil.which("ldd") and shutil.which("dpkg") and shutil.which("apt-cache")):
        skipped.append("runtime libraries (ldd, dpkg or apt-cache missing)")
        return
    def shipped(path):
        # Sanitizer and fuzzing builds link their runtimes (libasan, ...): the image ships a plain build.
        parts = os.path.relpath(path, ROOT).split(os.sep)
        return os.access(path, os.X_OK) and not any("asan" in part or "fuzz" in part for part in parts)

    def built(*relative):
        return sorted(glob.glob(os.path.join(ROOT, "build*", *relative)) +
                      glob.glob(os.path.join(ROOT, "build*", "*", *relative)))

    chosen = os.environ.get("PEERD_BINARY", "")  # checked as given
    candidates = ([chosen] if chosen and os.access(chosen, os.X_OK) else []) + [
        path for path in built("peerd", "daemon", "peerd") if shipped(path)]
    binaries = candidates[:1]
    for name in ("peerd-random", "peerd-ctr"):
        binaries += [path for path in built("workloads", name) if shipped(path)][:1]
    if not binaries:
        skipped.append("runtime libraries (no built peerd binary; set PEERD_BINARY)")
        return
    closure_text = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
         "--no-replaces", "--no-enhances"] + sorted(runtime_packages),
        capture_output=True, text=True).stdout
    closure = {line.strip().split(":")[0] for line in closure_text.splitlines() if line and not line.startswith(" ")}
    if len(closure) < len(runtime_packages):
        skipped.append("runtime libraries (apt-cache has no package lists)")
        return
    allowed = closure | SLIM_BASE
    for binary in binaries:
        libraries = sorted(set(re.findall(r"=> (/\S+)", subprocess.run(["ldd", binary], capture_output=True,
                                                                        text=True).stdout)))
        # dpkg -S knows the path a package installed, which may be the symlink or its target.
        owners = {}
        query = sorted({os.path.realpath(library) for library in libraries} | set(libraries))
        for line in subprocess.run(["dpkg", "-S"] + query, capture_output=True, text=True).stdout.splitlines():
            package, _, path = line.partition(": ")
            owners[path.strip()] = package.split(":")[0]
        for library in libraries:
            package = owners.get(os.path.realpath(library)) or owners.get(library)
            check(package in allowed, f"{os.path.relpath(binary, ROOT)} loads {library} from {package or 'no package'}"
                                      f", which the runtime image does not install")
    print(f"  runtime libraries checked for {', '.join(os.path.relpath(b, ROOT) for b in binaries)}")


def check_dockerignore():
    patterns = [line.strip() for line in read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")]

    def ignored(path):
        return any(fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern)
                   for pattern in patterns)

    for path in (".git", "build", "build-daemon", "build/release"):
        check(ignored(path), f".dockerignore keeps {path} in the build context")
    for path in ("CMakeLists.txt", "peerd/daemon/main.cc", "workloads/CMakeLists.txt", "scripts/install-deps.sh",
                 "peerd/core/common/time.h", "simulator/CMakeLists.txt"):
        check(not ignored(path), f".dockerignore drops {path}, which the build needs")


def main():
    for name, step in (("kind cluster", check_cluster), ("manifests", check_manifests),
                       ("Dockerfile", check_dockerfile), (".dockerignore", check_dockerignore)):
        print(name)
        try:
            step()
        except (KeyError, TypeError, AttributeError, ValueError, IndexError, yaml.YAMLError) as error:
            check(False, f"{name}: cannot check ({type(error).__name__}: {error})")
    note = f"; skipped: {', '.join(skipped)}" if skipped else ""
    if problems:
        print(f"static_test: FAIL ({len(problems)} of {checks[0]} checks failed{note})")
        return 1
    print(f"static_test: PASS ({checks[0]} checks{note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
