#!/usr/bin/env bash
# Builds the pinned Go tools the tests and the demo run, from their Go modules.
# The pins are the go.mod/go.sum files under hack/tools/<pin>/; one pin may
# serve several tools (hack/tools/kubernetes: the API server and the test
# kit's node, so they are always one Kubernetes version). Each build is
# cached under $TOOLS_CACHE/<tool>-<version>-<key>, where <key> hashes the
# pin files and the Go version, so a changed pin rebuilds and nothing else does.
# Finally .tools/bin/ in the repo is pointed at the exact builds of this checkout.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${TOOLS_CACHE:-$HOME/.cache/kilo-clustermesh-operator/tools}
bin="$repo/.tools/bin"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
mkdir -p "$cache" "$bin"

# tool name | pin dir under hack/tools | pinned module | package to build
tools=(
  "kube-apiserver|kubernetes|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-apiserver"
  "kubelet|kubernetes|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kubelet"
  "kube-controller-manager|kubernetes|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler|kubernetes|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-scheduler"
  "kube-proxy|kubernetes|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-proxy"
  "kube-apiserver-1.28|kube-apiserver-1.28|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-apiserver"
  "kubectl|kubectl|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kubectl"
  "etcd|etcd|go.etcd.io/etcd/server/v3|go.etcd.io/etcd/server/v3"
  "helm|helm|helm.sh/helm/v3|helm.sh/helm/v3/cmd/helm"
  "helm-unittest|helm-unittest|github.com/helm-unittest/helm-unittest|github.com/helm-unittest/helm-unittest/cmd/helm-unittest"
  # The node's sandbox program: our own code in the pin directory, no version but its hash.
  "pause|pause|kilo-clustermesh-operator/hack/tools/pause|kilo-clustermesh-operator/hack/tools/pause"
)

build() { # <name> <pin dir> <module> <package> <out dir>
  local name=$1 pin=$2 module=$3 pkg=$4 out=$5 version ldflags=(-s -w)
  version=$(cd "$pin" && go list -m -f '{{.Version}}' "$module")
  version=${version:-local}
  case $module in
    k8s.io/kubernetes) ldflags+=(-X "k8s.io/component-base/version.gitVersion=$version") ;;
  esac
  if [ "$name" = helm-unittest ]; then
    # A Helm plugin: its plugin.yaml next to the binary it names for this platform.
    (cd "$pin" && go build -trimpath -ldflags="${ldflags[*]}" -o "$out/helm-unittest/untt-linux-amd64" "$pkg")
    cp "$(cd "$pin" && go list -m -f '{{.Dir}}' "$module")/plugin.yaml" "$out/helm-unittest/"
  else
    (cd "$pin" && go build -trimpath -ldflags="${ldflags[*]}" -o "$out/$name" "$pkg")
  fi
}

for entry in "${tools[@]}"; do
  IFS='|' read -r name dir module pkg <<<"$entry"
  pin="$repo/hack/tools/$dir"
  version=$(cd "$pin" && go list -m -f '{{.Version}}' "$module")
  version=${version:-local}
  # Every file of the pin (go.mod, go.sum, and the sources of a local tool).
  key=$(cat "$pin"/* <(go version) | sha256sum | cut -c1-12)
  dest="$cache/$name-$version-$key"
  start=$SECONDS
  if [ -f "$dest/.complete" ]; then
    echo "tools: $name $version: cached in $dest (no rebuild)"
  else
    echo "tools: $name $version: building from $module ..."
    rm -rf "$dest.partial" && mkdir -p "$dest.partial"
    build "$name" "$pin" "$module" "$pkg" "$dest.partial"
    touch "$dest.partial/.complete"
    rm -rf "$dest" && mv "$dest.partial" "$dest"
    echo "tools: $name $version: built in $((SECONDS - start)) s"
  fi
  for f in "$dest"/*; do ln -sfn "$f" "$bin/$(basename "$f")"; done
done
echo "tools: ready in $bin"
