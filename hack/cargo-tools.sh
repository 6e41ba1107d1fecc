#!/usr/bin/env bash
# Installs the pinned cargo tools `make lint` runs (cargo-deny), from
# crates.io, once per pin: each is cached under
# $TOOLS_CACHE/<tool>-<version>-<rustc version>, so a new pin or a new
# toolchain rebuilds and nothing else does. .tools/bin/ in the repo is
# pointed at the builds of this checkout.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${TOOLS_CACHE:-$HOME/.cache/kilo-clustermesh-operator/tools}
bin="$repo/.tools/bin"
mkdir -p "$cache" "$bin"

# crate | version
tools=(
  "cargo-deny|0.18.3"
)

rustc_version=$(rustc --version | cut -d' ' -f2)
for entry in "${tools[@]}"; do
  IFS='|' read -r name version <<<"$entry"
  dir="$cache/$name-$version-rustc-$rustc_version"
  if [ ! -x "$dir/bin/$name" ]; then
    echo "installing $name $version (once per pin)" >&2
    rm -rf "$dir.partial"
    cargo install "$name" --version "=$version" --locked --root "$dir.partial"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
  fi
  ln -sfn "$dir/bin/$name" "$bin/$name"
done
