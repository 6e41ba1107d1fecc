#!/usr/bin/env bash
# Installs the Debian packages a make target needs, when they are missing:
#   bash hack/debian-packages.sh "<what needs them>" <package>...
# Needs root only when something is missing. The package lists are updated at
# most once an hour, so the targets of one `make test` update them once. A
# package's own daemon (containerd, the registry) is not started: the tests
# start their own, with their own sockets and ports.
set -euo pipefail
what=$1
shift
missing=()
for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "$what needs root and these packages: ${missing[*]} (run: sudo bash hack/debian-packages.sh '$what' ${missing[*]})" >&2
  exit 1
fi
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
echo "installing ${missing[*]} for $what" >&2
if ! find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | grep -q .; then
  apt-get update -qq
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
