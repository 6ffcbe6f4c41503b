# syntax=docker/dockerfile:1
# The broker image: tributary-broker (what the operator's StatefulSet runs), the
# tributary-controller and the tributary CLI, so that `kubectl exec` into a broker pod can
# produce, consume and describe. Build from the repository root:
#   docker build -f docker/broker.Dockerfile -t ghcr.io/tributary-dev/tributary:0.1.0 .

# Debian 12 (bookworm), as the runtime base is: the binaries need its glibc.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY broker broker
COPY operator operator
COPY e2e e2e
COPY store-suite store-suite
# The registry and the target directory are cache mounts: a rebuild compiles only what
# changed. Binaries are copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,id=tributary-target,sharing=locked \
    cargo build --release --locked -p tributary-broker \
        --bin tributary-broker --bin tributary-controller --bin tributary \
 && mkdir -p /out \
 && cp target/release/tributary-broker target/release/tributary-controller \
       target/release/tributary /out/

# glibc and libgcc only, no shell; the nonroot user is 65532, the uid, gid and fsGroup of
# the broker pods.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/tributary-dev/tributary" \
      org.opencontainers.image.description="Tributary broker, controller and CLI" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
EXPOSE 9092 9095 8080
ENTRYPOINT ["/usr/local/bin/tributary-broker"]
