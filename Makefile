# Thin entry points; the work is in cargo and hack/build-tools.sh.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
CRD := charts/kilo-clustermesh-operator/crds/clustermeshes.kilo.squat.ai.yaml

CHART := charts/kilo-clustermesh-operator
HELM := .tools/bin/helm

.PHONY: demo test test-compat test-chart lint tools manifests build bench clean-tools

## demo: real control planes + the operator + a real WireGuard data path, on this machine
demo:
	@echo "make demo: not yet. The demo (3 clusters, Kilo agents, WireGuard in network namespaces) lands with the demo issue." >&2
	@exit 2

## test: formatting, lints, unit tests, integration tests against real API servers, 1.28 compatibility
test: tools lint test-chart
	$(CARGO) test --workspace --all-targets --exclude kilo-clustermesh-testkit
	$(CARGO) test -p kilo-clustermesh-testkit -- --show-output
	$(MAKE) --no-print-directory test-compat

## test-compat: the CRD, its CEL rules and the controller on the oldest supported Kubernetes (1.28)
test-compat: tools
	KCM_KUBE_APISERVER=kube-apiserver-1.28 $(CARGO) test -p kilo-clustermesh-operator --test crd_validation --test mesh_controller

## test-chart: helm lint --strict (hub and remote mode) and the chart's helm-unittest suites
test-chart: tools
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set mode=remote
	HELM_PLUGINS=$(CURDIR)/.tools/bin $(HELM) unittest $(CHART)

## lint: cargo fmt --check and clippy with warnings denied
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## tools: build the pinned Go tools (kube-apiserver, etcd, helm, helm-unittest) once per pin
tools:
	bash hack/build-tools.sh

## manifests: regenerate the CRD from the Rust types
manifests:
	$(CARGO) run -q -p kilo-clustermesh-operator -- crd > $(CRD)

## bench: convergence, scale and steady-state figures on real API servers (docs/performance.md);
## BENCH_ARGS="--nodes 100,1000 --churn-duration 1m" runs a shorter set
bench: tools
	$(CARGO) build --release -p kilo-clustermesh-operator -p kilo-clustermesh-bench
	target/release/kilo-clustermesh-bench $(BENCH_ARGS)

## build: the release binary
build:
	$(CARGO) build --release -p kilo-clustermesh-operator

## clean-tools: forget the tool builds of every pin
clean-tools:
	rm -rf "$${TOOLS_CACHE:-$$HOME/.cache/kilo-clustermesh-operator/tools}" .tools
