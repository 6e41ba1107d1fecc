#!/usr/bin/env bash
# Builds the operator's image here, offline, with no daemon and no base image:
# the static release binary and Debian's CA bundle in an empty (`scratch`)
# image, user 65532:65532, written as an OCI archive,
#   target/image/kilo-clustermesh-operator-<version>.oci.tar
# whose image is named localhost/kilo-clustermesh-operator:<version>.
#
# Reproducible: every timestamp is SOURCE_DATE_EPOCH (default: the last
# commit's time), the build paths are remapped, and the archive's tar is
# written in a fixed order, so two builds of one checkout give the same bytes.
# The Dockerfile builds the same image where base images can be pulled.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
out=target/image
target=x86_64-unknown-linux-gnu

id=$(cargo pkgid -p kilo-clustermesh-operator)
version=${id##*[#@]}
revision=$(git rev-parse HEAD)
git diff --quiet HEAD -- || revision="$revision-dirty"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
name=localhost/kilo-clustermesh-operator:$version
archive=$out/kilo-clustermesh-operator-$version.oci.tar

# The binary: glibc linked in statically (static-pie), symbols stripped. Its own
# target directory, so these flags leave the normal build's cache alone.
start=$SECONDS
RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$repo=/src --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo" \
  CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --locked --target "$target" --target-dir "$out/cargo" -p kilo-clustermesh-operator
binary=$out/cargo/$target/release/kilo-clustermesh-operator
if ! file "$binary" | grep -q 'static'; then
  echo "image: $binary is not statically linked: $(file -b "$binary")" >&2
  exit 1
fi
echo "image: binary built in $((SECONDS - start)) s: $(file -b "$binary")"

# buildah with a storage of its own (vfs: no mounts, works in any container),
# removed afterwards. `from scratch` pulls nothing.
work=$(mktemp -d "$repo/$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
buildah=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
container=$("${buildah[@]}" from scratch)
"${buildah[@]}" copy --quiet --chown 0:0 --chmod 0755 "$container" "$binary" /kilo-clustermesh-operator
"${buildah[@]}" copy --quiet --chown 0:0 --chmod 0644 "$container" \
  /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# The labels as the Dockerfile sets them, and the same as manifest annotations.
meta=(
  "org.opencontainers.image.title=kilo-clustermesh-operator"
  "org.opencontainers.image.source=https://github.com/squat/kilo-clustermesh-operator"
  "org.opencontainers.image.licenses=Apache-2.0"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.created=$created"
)
# No base image, so no base.name and base.digest annotations (buildah would
# write them empty).
"${buildah[@]}" config --user 65532:65532 --port 8080 \
  --entrypoint '["/kilo-clustermesh-operator"]' --cmd '["run"]' \
  "${meta[@]/#/--label=}" "${meta[@]/#/--annotation=}" \
  --annotation org.opencontainers.image.base.name- --annotation org.opencontainers.image.base.digest- \
  "$container"
"${buildah[@]}" commit --quiet --timestamp "$SOURCE_DATE_EPOCH" --omit-history \
  --identity-label=false --disable-compression=false \
  "$container" "oci:$work/layout:$name" >/dev/null

# The archive: the OCI layout in a tar with fixed order, owners and times.
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  --format=ustar -C "$work/layout" -cf "$archive.partial" .
mv "$archive.partial" "$archive"
echo "image: $name in $archive ($(stat -c %s "$archive") bytes)," \
  "manifest $(skopeo inspect --format '{{.Digest}}' "oci-archive:$archive")"
