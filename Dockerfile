# syntax=docker/dockerfile:1
#
# The deskhook image: a release build of the one binary on a distroless base that runs as a
# non-root user and holds CA certificates (for Zoho's APIs) and nothing else: no shell, no
# package manager.
#
#   docker build -t deskhook:0.1.0 .

# The Rust image the binary is built with: any release at or above the crate's rust-version.
ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies change far less often than the code: the registry and the target directory live
# in cache mounts, so a rebuild after an edit only compiles deskhook itself.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin deskhook \
    && install -D -m 0755 target/release/deskhook /out/deskhook

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/deskhook /usr/local/bin/deskhook
# 65532 is the distroless `nonroot` user; numeric so Kubernetes can check runAsNonRoot.
USER 65532:65532
# 5000: webhook listener; 9090: metrics and admin listener.
EXPOSE 5000 9090
ENTRYPOINT ["/usr/local/bin/deskhook"]
CMD ["serve"]
