# syntax=docker/dockerfile:1
# peerd images. Build from the repository root:
#   docker build -t peerd:dev .                              the daemon (default target)
#   docker build --target random -t peerd-random:dev .       workloads/random (kind-test-random)
#   docker build --target ctr -t peerd-ctr:dev .             workloads/ctr (kind-test-ctr)
# Stages: toolchain (build packages) -> source (configured CMake tree) -> build-<target> (one binary each) ->
# runtime (shared libraries, CA certificates, user 65532) -> peerd / random / ctr. Needs BuildKit (the default
# builder since Docker 23) so that a target builds only the stages it uses.

ARG DEBIAN_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# The build packages of scripts/install-deps.sh that the daemon and workloads need (no clang, ns-3 or test
# services: those are for tests, fuzzers and the simulator).
# EXTRA_BUILD_PACKAGES: more -dev packages, should a target need them.
FROM ${DEBIAN_IMAGE} AS toolchain
ARG EXTRA_BUILD_PACKAGES=""
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build ca-certificates \
      libboost-dev libcurl4-openssl-dev nlohmann-json3-dev libssl-dev \
      libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
      libgtest-dev libbenchmark-dev \
      ${EXTRA_BUILD_PACKAGES} \
 && rm -rf /var/lib/apt/lists/*

# One configured tree shared by every binary. CMake needs GTest to configure even though no test is built here;
# benchmarks are off. The simulator configures itself out (no ns-3 in this image).
FROM toolchain AS source
WORKDIR /src
COPY . .
ARG BUILD_TYPE=Release
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DPEERD_BENCHMARKS=OFF -DPEERD_WERROR=OFF

FROM source AS build-peerd
RUN ninja -C /build peerd \
 && install -D -m 0755 -s /build/peerd/daemon/peerd /out/peerd

# The workload targets live under workloads/; their output directory follows that layout, so find them.
FROM source AS build-random
RUN ninja -C /build peerd-random \
 && install -D -m 0755 -s "$(find /build -type f -name peerd-random -perm -u+x | head -n 1)" /out/peerd-random

FROM source AS build-ctr
RUN ninja -C /build peerd-ctr \
 && install -D -m 0755 -s "$(find /build -type f -name peerd-ctr -perm -u+x | head -n 1)" /out/peerd-ctr

# Runtime: libcurl (pulls in OpenSSL and the rest of its libraries), gRPC and protobuf (the containerd client)
# and CA certificates for upstream TLS.
# Default user 65532 (non-root). The chart runs peerd as root with every capability dropped, because it writes
# hosts.toml into the node's root-owned /etc/containerd/certs.d and its cache into a hostPath, and opens the
# containerd socket; as non-root those paths must be made writable for uid 65532 on every node (see
# charts/peerd/values.yaml, securityContext).
FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates libcurl4 \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libc-ares2 libre2-9 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 peerd \
 && useradd --system --uid 65532 --gid peerd --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin peerd \
 && install -d -o 65532 -g 65532 -m 0750 /var/cache/peerd
USER 65532:65532

FROM runtime AS random
COPY --from=build-random /out/peerd-random /usr/local/bin/peerd-random
ENTRYPOINT ["/usr/local/bin/peerd-random"]

# peerd-ctr runs `ctr` (containerd's client) for every pull. Debian's ctr is a Go binary needing only libc, so
# only it is copied, not containerd and runc. It talks to the node's containerd socket, which is root-only: the
# kind manifest runs the workload as root.
FROM ${DEBIAN_IMAGE} AS ctr-tool
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends containerd \
 && rm -rf /var/lib/apt/lists/*

FROM runtime AS ctr
COPY --from=ctr-tool /usr/bin/ctr /usr/local/bin/ctr
COPY --from=build-ctr /out/peerd-ctr /usr/local/bin/peerd-ctr
ENTRYPOINT ["/usr/local/bin/peerd-ctr"]

# Last, so that a plain `docker build .` gives the daemon.
FROM runtime AS peerd
COPY --from=build-peerd /out/peerd /usr/local/bin/peerd
# HTTP API (containerd mirror, peers, /blobs/), DHT router (UDP), /metrics /healthz /readyz.
EXPOSE 5000/tcp 5003/udp 5004/tcp
VOLUME ["/var/cache/peerd"]
ENTRYPOINT ["/usr/local/bin/peerd", "run"]
