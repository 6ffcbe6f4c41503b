# syntax=docker/dockerfile:1
# The operator image: tributary-operator, whose Deployment runs it with the argument
# `run`. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/tributary-dev/tributary-operator:0.1.0 .

# Debian 12 (bookworm), as the runtime base is: the binaries need its glibc.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY broker broker
COPY operator operator
COPY e2e e2e
COPY store-suite store-suite
# The same target cache as the broker image's build: the broker crate is compiled once.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,id=tributary-target,sharing=locked \
    cargo build --release --locked -p tributary-operator --bin tributary-operator \
 && mkdir -p /out \
 && cp target/release/tributary-operator /out/

# glibc and libgcc only, no shell; the nonroot user is 65532, the operator pods' runAsUser.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/tributary-dev/tributary" \
      org.opencontainers.image.description="Tributary Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 9093 8080
ENTRYPOINT ["/usr/local/bin/tributary-operator"]
CMD ["run"]
