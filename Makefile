# Thin entry points; the work is in cargo and hack/build-tools.sh.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
CRD := charts/kilo-clustermesh-operator/crds/clustermeshes.kilo.squat.ai.yaml

CHART := charts/kilo-clustermesh-operator
HELM := .tools/bin/helm
# cargo-fuzz runs the fuzz targets on the nightly toolchain; the project builds on stable.
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := .tools/cargo-fuzz-$(CARGO_FUZZ_VERSION)/bin
FUZZ := PATH="$(CURDIR)/$(CARGO_FUZZ):$$PATH" $(CARGO) +nightly fuzz
FUZZ_SECONDS ?= 30
# Our code is safe Rust: AddressSanitizer watches only the dependencies' unsafe code, and costs about
# four fifths of the inputs a target runs. FUZZ_SANITIZER=address runs with it.
FUZZ_SANITIZER ?= none

# The Debian packages each part needs (hack/debian-packages.sh installs the missing ones).
# The network lab: userspace WireGuard, its tools, namespaces, routes, rules, pings.
NETLAB_PACKAGES := wireguard-go wireguard-tools iproute2 iptables iputils-ping util-linux
# The image and the install test: buildah builds it, skopeo copies it into the registry (the CNCF
# distribution registry), ca-certificates is the bundle the image ships.
IMAGE_PACKAGES := buildah skopeo docker-registry ca-certificates
# The test kit's node: containerd and runc run the pods, the CNI plugins (bridge, host-local,
# loopback) give them their network, iptables and conntrack serve kube-proxy and the bridge's
# masquerading, iproute2 makes the node's namespace and util-linux its nsenter.
NODE_PACKAGES := containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux

.PHONY: demo e2e netlab-packages test test-compat test-chart lint cargo-tools chaos fuzz tools manifests build bench clean-tools image image-packages node-packages test-install

## demo: real control planes + the operator + a real WireGuard data path, on this machine (root);
## DEMO_SECONDS=N keeps the lab up N seconds instead of until Ctrl-C
demo: netlab-packages tools
	$(CARGO) build --release -p kilo-clustermesh-operator -p kilo-clustermesh-netlab
	target/release/kcm-netlab demo

## e2e: packets across a mesh the operator configured, in the network lab, with faults (root; docs/netlab.md)
e2e: netlab-packages tools
	$(CARGO) build -p kilo-clustermesh-operator
	$(CARGO) test -p kilo-clustermesh-netlab --test e2e --test teardown -- --nocapture

## netlab-packages: the Debian packages of the network lab (wireguard-go, wg, ip, iptables, ping)
netlab-packages:
	bash hack/debian-packages.sh "the network lab" $(NETLAB_PACKAGES)

## test: formatting, lints, unit tests, integration tests against real API servers (with the install from
## a registry of the image it builds first, as test-install), 1.28 compatibility, the data-plane end-to-end test
test: tools lint test-chart image node-packages
	$(CARGO) test --workspace --all-targets --exclude kilo-clustermesh-testkit --exclude kilo-clustermesh-netlab
	$(CARGO) test -p kilo-clustermesh-testkit -- --show-output
	$(CARGO) test -p kilo-clustermesh-netlab --lib --bins
	$(MAKE) --no-print-directory test-compat
	$(MAKE) --no-print-directory e2e

## test-compat: the CRD, its CEL rules and the controller on the oldest supported Kubernetes (1.28)
test-compat: tools
	KCM_KUBE_APISERVER=kube-apiserver-1.28 $(CARGO) test -p kilo-clustermesh-operator --test crd_validation --test mesh_controller

## test-chart: helm lint --strict (hub and remote mode) and the chart's helm-unittest suites
test-chart: tools
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set mode=remote
	HELM_PLUGINS=$(CURDIR)/.tools/bin $(HELM) unittest $(CHART)

## test-install: the image and the chart pushed to a registry, `helm install oci://...` into a real API
## server with a real node (kubelet, containerd), the operator's pod meshing two clusters, as
## docs/install.md says (root); `make test` runs it too
test-install: tools image node-packages
	$(CARGO) test -p kilo-clustermesh-operator --test install

## image: the operator's image, built offline with buildah from the static release binary, reproducibly,
## as the OCI archive target/image/kilo-clustermesh-operator-<version>.oci.tar (root; hack/image.sh)
image: image-packages
	bash hack/image.sh

## image-packages: the Debian packages of the image and the install test (buildah, skopeo, docker-registry)
image-packages:
	bash hack/debian-packages.sh "the image build" $(IMAGE_PACKAGES)

## node-packages: the Debian packages of the test kit's node (containerd, runc, CNI plugins, iptables)
node-packages:
	bash hack/debian-packages.sh "the test kit's node" $(NODE_PACKAGES)

## lint: cargo fmt --check, clippy with warnings denied, and cargo deny's offline checks (deny.toml)
lint: cargo-tools
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	.tools/bin/cargo-deny --log-level error check licenses bans sources

## cargo-tools: install the pinned cargo tools (cargo-deny) once per pin
cargo-tools:
	bash hack/cargo-tools.sh

## chaos: a seeded run of random faults on real control planes, checked against a fresh plan;
## SEED=<n> replays a run, DURATION=<seconds> (default 600); `make test` runs a short one
chaos: tools
	CHAOS_SEED=$(SEED) CHAOS_SECONDS=$(or $(DURATION),600) $(CARGO) test -p kilo-clustermesh-operator --test chaos -- --nocapture

## fuzz: each libFuzzer target of fuzz/ for FUZZ_SECONDS seconds (default 30), from its committed seeds
## and what earlier runs found; stops at the first crash (docs/reliability.md#fuzzing-make-fuzz)
fuzz: $(CARGO_FUZZ)/cargo-fuzz
	$(FUZZ) build --sanitizer $(FUZZ_SANITIZER)
	for target in $$($(FUZZ) list); do \
	  $(FUZZ) run --sanitizer $(FUZZ_SANITIZER) $$target -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 -dict=fuzz/dict/$$target.dict \
	    -print_final_stats=1; \
	done

$(CARGO_FUZZ)/cargo-fuzz:
	$(CARGO) install cargo-fuzz --version =$(CARGO_FUZZ_VERSION) --locked --root $(dir $(CARGO_FUZZ))

## tools: build the pinned Go tools (kube-apiserver and the node's kubelet, kube-proxy,
## kube-controller-manager, kube-scheduler from one Kubernetes pin; etcd, helm, helm-unittest) once per pin
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
