# The operator image: the one static binary, a CA bundle, nothing else; runs as
# a non-root user (65532, the UID the Helm chart sets).
#
# `make image` (hack/image.sh) builds this same image without this file:
# offline, with buildah and no base image, into an OCI archive. This file is
# for builders that can pull its base images; the project's build machines
# reach no container registry and never build it.
#
#   docker build -t ghcr.io/squat/kilo-clustermesh-operator:0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u -d @$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) .
#   (buildah build takes the same arguments.)
#
# Both build the binary alike: glibc linked statically (static-pie; it resolves
# names from the pod's /etc/hosts and /etc/resolv.conf with no NSS modules),
# symbols stripped, build paths remapped; Debian 12's CA bundle beside it; the
# same user, entrypoint, command, port and labels. tests/install.rs checks the
# labels and the user against the image `make image` writes.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# The checkout is /src already, as hack/image.sh remaps it; crates.io sources to /cargo as there.
RUN RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$CARGO_HOME=/cargo" \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target x86_64-unknown-linux-gnu -p kilo-clustermesh-operator \
 && cp target/x86_64-unknown-linux-gnu/release/kilo-clustermesh-operator /kilo-clustermesh-operator

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /kilo-clustermesh-operator /kilo-clustermesh-operator
LABEL org.opencontainers.image.title=kilo-clustermesh-operator \
      org.opencontainers.image.source=https://github.com/squat/kilo-clustermesh-operator \
      org.opencontainers.image.licenses=Apache-2.0 \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.created=$CREATED
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/kilo-clustermesh-operator"]
CMD ["run"]
