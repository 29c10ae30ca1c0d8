# syntax=docker/dockerfile:1.7
#
# The newsletter service: one binary, every role (`newsletter serve|api|projector|mailer`).
#   docker build -t newsletter .
# Multi-stage: a full Rust toolchain builds a release binary; the runtime image is distroless
# (glibc, CA certificates, no shell, no package manager), runs as a non-root user and works
# with a read-only root filesystem (write only to /var/lib/newsletter and /tmp).

ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_SUITE} AS build
WORKDIR /src
# Manifests first, so a change of source alone reuses the dependency download layer.
COPY Cargo.toml Cargo.lock ./
COPY services ./services
COPY proto ./proto
COPY tests ./tests
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p newsletter --bin newsletter \
 && install -D -m 0755 target/release/newsletter /out/newsletter \
 && mkdir -p /out/data

# A static busybox gives the HEALTHCHECK an HTTP client; distroless has none.
FROM docker.io/library/busybox:1.37-musl AS busybox

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="newsletter" \
      org.opencontainers.image.description="Event-sourced newsletter subscriptions (double opt-in)" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=busybox /bin/busybox /usr/local/bin/busybox
COPY --from=build /out/newsletter /usr/local/bin/newsletter
# The data dir, owned by the runtime user (a fresh named volume takes over this ownership).
COPY --from=build --chown=65532:65532 /out/data /var/lib/newsletter
# distroless' nonroot user: uid/gid 65532. Kubernetes' runAsNonRoot needs the numeric id.
USER 65532:65532
ENV NEWSLETTER_LISTEN=0.0.0.0:8080 \
    NEWSLETTER_DATA_DIR=/var/lib/newsletter \
    NEWSLETTER_LOG_FORMAT=json
WORKDIR /var/lib/newsletter
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health/live"]
ENTRYPOINT ["/usr/local/bin/newsletter"]
CMD ["serve"]
