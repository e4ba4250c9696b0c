# Thin wrapper: every target calls CMake/ctest or a script under scripts/. `make help` lists them.
BUILD_DIR ?= build/release
JOBS ?= $(shell nproc)

.DEFAULT_GOAL := help
.PHONY: help all deps build test unit integration sim demo bench install fuzz format clean
.PHONY: local-create local-deploy local-test-random local-test-ctr local-delete local-all
.PHONY: build-image kind-create kind-deploy kind-test-random kind-test-ctr kind-delete chart-test
IMAGE_TAG ?= dev

define BANNER

         _____                  _
        |  __ \                | |
        | |__) |__  ___ _ __ __| |
        |  ___/ _ \/ _ \ '__/ _` |
        | |  |  __/  __/ | | (_| |
        |_|   \___|\___|_|  \__,_|

endef
export BANNER

help: ## Generates help for all targets with a description.
	@echo "$$BANNER"
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "%-30s %s\n", $$1, $$2}'

all: build test ## Runs the peerd build targets in the correct order.

deps: ## Installs every Debian package the project needs (root).
	./scripts/install-deps.sh

build: ## Build the peerd libraries, tests, demo and benchmarks.
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
	ninja -C $(BUILD_DIR) -j $(JOBS)

unit: build ## Runs the unit tests (ctest label unit).
	cd $(BUILD_DIR) && ctest -L unit --output-on-failure -j $(JOBS)

integration: build ## Runs the integration tests: registry, nginx, containerd and peerd clusters on 127.0.0.x (root).
	cd $(BUILD_DIR) && ctest -L integration --output-on-failure -j 1

sim: build ## Runs the ns-3 simulator tests (ctest label sim).
	cd $(BUILD_DIR) && ctest -L sim --output-on-failure -j $(JOBS)

install: build ## Installs peerd to $(PREFIX)/bin and peerd.service to $(PREFIX)/lib/systemd/system (PREFIX=/usr/local).
	cmake --install $(BUILD_DIR) --prefix $(or $(PREFIX),/usr/local)
	@echo "systemd: systemctl daemon-reload && systemctl enable --now peerd"

test: ## Runs everything CI runs: deps, -Werror build, unit tests, ASan+UBSan, fuzzers, format check.
	./scripts/test.sh

demo: ## Runs the main job: a registry, 3 peerd nodes and 3 containerd on 127.0.0.x pull a 200 MB image (root).
	./scripts/demo.sh

bench: build ## Runs the Google Benchmark targets (not run in CI).
	@for b in $(BUILD_DIR)/benchmarks/*_benchmark; do echo "== $$b"; $$b; done

fuzz: ## Builds the libFuzzer targets with clang and runs each for FUZZ_SECONDS (default 60).
	./scripts/fuzz.sh

format: ## Formats every C++ file with clang-format.
	git ls-files '*.h' '*.cc' | xargs clang-format -i

build-image: ## Build the peerd, peerd-random and peerd-ctr docker images (Dockerfile, BuildKit).
	docker build -t peerd:$(IMAGE_TAG) .
	docker build --target random -t peerd-random:$(IMAGE_TAG) .
	docker build --target ctr -t peerd-ctr:$(IMAGE_TAG) .

kind-create: ## Creates a local kind cluster (1 control plane, 3 workers).
	./kind/scripts/kind.sh create

kind-deploy: ## Deploys peerd to the kind cluster with helm and waits for P2PConnected on every pod.
	PEERD_IMAGE=peerd:$(IMAGE_TAG) ./kind/scripts/kind.sh deploy

kind-test-random: ## Runs the random workload on every kind node and waits for P2PActive.
	RANDOM_IMAGE=peerd-random:$(IMAGE_TAG) ./kind/scripts/kind.sh test-random

kind-test-ctr: ## Runs the ctr workload (image pulls through containerd) on every kind node.
	CTR_IMAGE=peerd-ctr:$(IMAGE_TAG) ./kind/scripts/kind.sh test-ctr

kind-delete: ## Deletes the kind cluster.
	./kind/scripts/kind.sh delete

chart-test: ## Checks the helm chart, kind scripts, manifests and Dockerfile without a cluster.
	/usr/bin/python3 charts/tests/chart_test.py
	PYTHON=/usr/bin/python3 ./kind/tests/run.sh

LOCAL_NODES ?= 3
LOCAL_IMAGE ?= big
LOCAL_REGISTRY_MBIT ?=
LOCAL_ENV = PEERD_BIN=$(abspath $(BUILD_DIR))/peerd/daemon/peerd WORKLOADS_DIR=$(abspath $(BUILD_DIR))/workloads

local-create: ## Local cluster on network namespaces: registry + LOCAL_NODES nodes with containerd (root; LOCAL_REGISTRY_MBIT caps the registry).
	./kind/local/cluster.sh create --nodes $(LOCAL_NODES) $(if $(LOCAL_REGISTRY_MBIT),--registry-mbit $(LOCAL_REGISTRY_MBIT))

local-deploy: ## Starts one peerd per local node (empty caches) and waits until every one joined the DHT (root).
	$(LOCAL_ENV) ./kind/local/cluster.sh deploy

local-test-random: ## Runs peerd-random (p2p, verified) on every local node at once against an nginx origin (root).
	$(LOCAL_ENV) ./kind/local/cluster.sh test-random

local-test-ctr: ## Runs peerd-ctr (pulls LOCAL_IMAGE through containerd -> peerd) on each local node in turn (root).
	$(LOCAL_ENV) ./kind/local/cluster.sh test-ctr --image $(LOCAL_IMAGE)

local-delete: ## Deletes the local cluster (processes, mounts, namespaces, bridge).
	./kind/local/cluster.sh delete

local-all: ## create, deploy, test-random, test-ctr and delete, torn down on failure or Ctrl-C (root).
	$(LOCAL_ENV) ./kind/local/cluster.sh all --nodes $(LOCAL_NODES) --image $(LOCAL_IMAGE) $(if $(LOCAL_REGISTRY_MBIT),--registry-mbit $(LOCAL_REGISTRY_MBIT))

clean: ## Removes build directories.
	rm -rf build
