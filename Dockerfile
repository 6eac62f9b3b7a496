# Turnpike's container image: the server on Debian 12 (bookworm-slim),
# running as an unprivileged user.
#
#   docker build -t turnpike .
#   docker run -d --name turnpike --network host --stop-timeout 35 \
#       -v /etc/turnpike:/etc/turnpike:ro -v turnpike-data:/var/lib/turnpike \
#       turnpike
#
# The README's "Install" section says which ports to publish, and how to
# mount the configuration, certificates and data. Podman builds and runs
# it the same way (scripts/test-container does, in CI).

# Images are arguments so that a mirror (or a locally built Debian base)
# can stand in: --build-arg BASE_IMAGE=... --build-arg RUST_IMAGE=...
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
# The DTLS code links the system OpenSSL 3 (as on a Debian host).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The README's build command (SQLite is compiled in); the debug line tables
# stay out of the image, as the Debian package leaves them out.
RUN cargo build --release --locked -p turnpike \
    && objcopy --strip-debug target/release/turnpike

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
# ldd target/release/turnpike: libssl.so.3 and libcrypto.so.3 (libssl3),
# libgcc_s, libm, libc (already in the base image). Nothing else.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# A fixed id, so a bind-mounted data directory can be given to it:
# chown 3478:3478 DIR.
RUN groupadd --system --gid 3478 turnpike \
    && useradd --system --uid 3478 --gid turnpike --no-create-home \
        --home-dir /var/lib/turnpike --shell /usr/sbin/nologin turnpike \
    && install -d -o turnpike -g turnpike -m 0750 /var/lib/turnpike \
    && install -d -m 0755 /etc/turnpike
COPY --from=builder /src/target/release/turnpike /usr/bin/turnpike
# The Debian package's configuration: STUN only until TURN is set up. Mount
# your own /etc/turnpike over it, or set TURNPIKE_* variables.
COPY deploy/debian/turnpike.toml /etc/turnpike/turnpike.toml
RUN chmod 0644 /etc/turnpike/turnpike.toml \
    && /usr/bin/turnpike version

USER turnpike:turnpike
WORKDIR /var/lib/turnpike
VOLUME ["/var/lib/turnpike"]
# STUN/TURN over UDP and TCP, TLS and DTLS. The relay ports (turn.min_port
# to turn.max_port, 49152-65535 by default) must be reachable too: use the
# host's network, or publish a narrowed range (README, "Install").
EXPOSE 3478/udp 3478/tcp 5349/udp 5349/tcp
# SIGTERM (docker stop) drains, then exits: give it shutdown.grace_period
# (25 s) and a little more with --stop-timeout 35 (Docker waits 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/turnpike"]
CMD ["serve", "--config", "/etc/turnpike/turnpike.toml"]
