# syntax=docker/dockerfile:1.7
#
# nagare-forwarder: one static binary (musl) plus CA certificates, in an image with nothing
# else: no shell, no package manager, no libc. Build from the repository root:
#
#   docker build -f deploy/docker/forwarder.Dockerfile -t nagare-forwarder:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -f deploy/docker/forwarder.Dockerfile .
#
# Not built in this repository's CI: its machines cannot pull base images (deploy/README.md).
#
# Health check: a shell-less image cannot run `curl` or `wget`, and Docker's HEALTHCHECK (and
# ECS's container healthCheck) in exec form only needs an executable, not a shell. The image
# ships `nagare-probe` (deploy/docker/probe.rs, std-only Rust, ~400 KB) for that.

ARG RUST_IMAGE=rust:1-bookworm

# ---- build --------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
ARG TARGETARCH
# musl-tools: musl-gcc, the C compiler for the musl targets. ring, aws-lc-sys (the TLS stack
#   is rustls on aws-lc-rs) and zstd-sys compile C through the cc crate; CC_<target> points
#   the cc crate at musl-gcc (the host gcc would pick glibc headers: aws/aws-lc-rs#736).
# cmake: aws-lc-sys's fallback build system for targets its cc-based build does not cover.
# ca-certificates: the bundle copied into the final image (the AWS SDK's rustls client loads
#   the system roots through rustls-native-certs; SSL_CERT_FILE below points it at them).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    T="$(cat /rust-target)"; \
    TU="$(echo "$T" | tr - _)"; \
    export "CC_${TU}=musl-gcc" "AR_${TU}=ar"; \
    cargo build --release --locked --target "$T" -p nagare-forwarder; \
    mkdir -p /rootfs/usr/local/bin /rootfs/etc/nagare /rootfs/etc/ssl/certs /datadir/nagare; \
    install -m 0755 "target/$T/release/nagare-forwarder" /rootfs/usr/local/bin/; \
    strip /rootfs/usr/local/bin/nagare-forwarder; \
    rustc --edition 2021 -C opt-level=s -C strip=symbols --target "$T" \
      -o /rootfs/usr/local/bin/nagare-probe deploy/docker/probe.rs; \
    install -m 0644 deploy/config/forwarder.conf /rootfs/etc/nagare/nagare.conf; \
    install -m 0644 examples/forwarder.conf /rootfs/etc/nagare/pipeline.conf; \
    install -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    echo 'nagare:x:10001:10001:nagare:/var/lib/nagare:/sbin/nologin' > /rootfs/etc/passwd; \
    echo 'nagare:x:10001:' > /rootfs/etc/group; \
    /rootfs/usr/local/bin/nagare-forwarder --version

# ---- runtime ------------------------------------------------------------------------------
FROM scratch
COPY --from=build /rootfs/ /
# /var/lib/nagare: file buffers and the embedded S3 store. Owned by the runtime user so a
# fresh Docker named volume inherits it; a host bind mount keeps the host's ownership, so the
# host directory must belong to uid 10001 (deploy/ecs/user-data.sh).
COPY --from=build --chown=10001:10001 /datadir/ /var/lib/
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    NAGARE_DATA_DIR=/var/lib/nagare
USER 10001:10001
# 24224/tcp forward protocol (Docker's fluentd log driver), 24224/udp heartbeats,
# 24220/tcp admin endpoint (/metrics, /health, /api/plugins.json).
EXPOSE 24224/tcp 24224/udp 24220/tcp
VOLUME ["/var/lib/nagare"]
# Liveness only (/api/plugins.json answers while the process serves). /health is readiness:
# it turns 503 while S3 or the aggregators fail, and restarting the forwarder fixes neither.
# ECS ignores this and uses the task definition's healthCheck (deploy/ecs/forwarder.json).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/nagare-probe", "http://127.0.0.1:24220/api/plugins.json"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/nagare-forwarder", "-c", "/etc/nagare/nagare.conf"]
