#!/usr/bin/env bash
# Installs the Debian packages the network lab needs (make demo, make e2e),
# when they are missing. Needs root, as the lab itself does.
set -euo pipefail
packages=(wireguard-go wireguard-tools iproute2 iptables iputils-ping util-linux)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the network lab needs root and these packages: ${missing[*]} (run: sudo make demo)" >&2
  exit 1
fi
echo "installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
