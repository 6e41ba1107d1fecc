#!/usr/bin/env bash
# Installs the Debian packages of the test kit's node (make test-install, make
# test), when they are missing: containerd and runc run the pods, the CNI
# plugins (bridge, host-local, loopback) give them their network, iptables
# and conntrack serve kube-proxy and the bridge plugin's masquerading, iproute2
# makes the node's network namespace and util-linux its nsenter.
set -euo pipefail
packages=(containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the test kit's node needs root and these packages: ${missing[*]} (run: sudo bash hack/node-packages.sh)" >&2
  exit 1
fi
# containerd's package starts the system's containerd where it can; the tests
# start their own, with its own socket and state. Keep the package from
# starting a daemon.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
echo "installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
