# The operator image: the one static binary, a CA bundle, nothing else; runs as
# a non-root user (65532, the UID the Helm chart sets).
#
#   docker build -t ghcr.io/squat/kilo-clustermesh-operator:0.1.0 .
#   buildah build -t ghcr.io/squat/kilo-clustermesh-operator:0.1.0 .
#
# The build stage links against musl, so the binary needs no libc at run time
# and resolves names from the pod's /etc/resolv.conf.

FROM docker.io/library/rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev gcc ca-certificates
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN cargo build --release --locked --package kilo-clustermesh-operator \
 && cp target/release/kilo-clustermesh-operator /kilo-clustermesh-operator

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /kilo-clustermesh-operator /kilo-clustermesh-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/kilo-clustermesh-operator"]
CMD ["run"]
