#!/usr/bin/env bash
# Installs every Debian 12 package peerd builds, tests and demos with. Idempotent: does nothing when all are
# present, otherwise runs `apt-get update` and installs what is missing. Run as root (CI does).
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates
  clang clang-format libclang-rt-14-dev
  # core tests and benchmarks
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  # daemon (peerd/daemon): Boost.Asio/Beast, libcurl, JSON, OpenSSL
  libboost-dev libboost-system-dev libcurl4-openssl-dev nlohmann-json3-dev libssl-dev openssl
  # containerd content store client (peerd/daemon/containerd): gRPC + protobuf, protoc plugins
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  # daemon integration tests (skipped when absent): registry, image tools, containerd, nginx
  docker-registry skopeo umoci containerd nginx-light
  # simulator (simulator/, peerd-sim): ns-3 3.37 and gnuplot for --plot (JSON scenarios: nlohmann-json3-dev above)
  libns3-dev gnuplot-nox
  # packaging tests (charts/tests, kind/tests): schema validation and YAML without a cluster
  python3-yaml python3-jsonschema shellcheck
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root: sudo $0" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
