#!/usr/bin/env bash
# Installs the Debian packages that build the image and run the install test
# (make image, make test-install), when they are missing: buildah, skopeo
# (copies the OCI archive into a registry), docker-registry (the CNCF
# distribution registry), ca-certificates (the bundle the image ships).
set -euo pipefail
packages=(buildah skopeo docker-registry ca-certificates)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the image build needs these packages: ${missing[*]} (run: sudo bash hack/image-packages.sh)" >&2
  exit 1
fi
# docker-registry's package starts a registry on :5000 where it can; the
# tests start their own on loopback. Keep the package from starting a daemon.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
echo "installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
