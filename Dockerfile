# syntax=docker/dockerfile:1
# hearth's image: build with Rust, run on Debian slim as a non-root user.
#
#   docker build -t hearth .                                   # models pulled at start (see deploy/)
#   docker build -t hearth:smollm --target baked .             # the default model baked in
#   docker build -t hearth --build-arg RUSTFLAGS="-C target-cpu=native" .   # for this CPU only
#
# Not built or run where these files were written (no Docker daemon there): docs/deploy.md says
# what was checked.

ARG RUST_VERSION=1.95

# ---- build ---------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
# .cargo/config.toml asks for `-C target-cpu=native`: the build machine's CPU, which need not be
# the one that runs the image. RUSTFLAGS, when set, replaces build.rustflags entirely. x86-64-v3
# (AVX2, FMA, F16C: Intel Haswell and AMD Zen onwards) is what candle's compile-time kernels get;
# hearth's own kernels still pick AVX-512/VNNI at run time where the CPU has them. An ARM build
# needs RUSTFLAGS="" (or a target-cpu of its own).
ARG RUSTFLAGS="-C target-cpu=x86-64-v3"
ENV RUSTFLAGS=${RUSTFLAGS} \
    CARGO_PROFILE_RELEASE_DEBUG=0
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY src src
COPY models models
COPY corpus corpus
COPY benches benches
# Registry and target caches persist between builds (BuildKit); the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hearth \
    && install -m 0755 target/release/hearth /usr/local/bin/hearth

# ---- runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# python3-pip: `hearth pull` fetches catalog models as pip packages (`python3 -m pip download`,
# which Debian's externally-managed marker does not block). ca-certificates: HTTPS for pip and hf:.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/hearth --create-home hearth \
    && install -d -o hearth -g hearth /var/lib/hearth/models
COPY --from=build /usr/local/bin/hearth /usr/local/bin/hearth
# HEARTH_HOME holds models/ and ledger.sqlite (or, with a PostgreSQL HEARTH_LEDGER, the spool
# ledger-spool.sqlite, rows waiting for the database). Replicas share one volume at
# /var/lib/hearth/models (created here owned by hearth, so that a new Docker volume mounted there
# is writable too); no VOLUME line, so that the `baked` target keeps its model.
# HEARTH_HOST=0.0.0.0: reachable from other containers. A non-loopback bind also turns off the
# loopback-only Host check, so LiteLLM and probes may use any Host name.
ENV HEARTH_HOME=/var/lib/hearth \
    HEARTH_HOST=0.0.0.0 \
    HEARTH_PORT=8080 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
USER hearth
WORKDIR /var/lib/hearth
EXPOSE 8080
# On SIGTERM (docker stop, Kubernetes) hearth stops accepting, finishes in-flight requests and
# flushes its ledger before exiting 0: give it a grace period (stop_grace_period, k8s's
# terminationGracePeriodSeconds).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
ENTRYPOINT ["hearth"]
# The model (HEARTH_MODEL, default: the catalog's default) must be pulled first: `hearth pull ID`
# in an init step (deploy/compose.yaml, deploy/k8s/deployment.yaml), or use the `baked` target.
CMD ["serve"]

# ---- runtime with a model inside -----------------------------------------------------------
# The model sits in the image's /var/lib/hearth/models: run it with no volume there (ledger in
# PostgreSQL), or with a new Docker named volume, which Docker fills from the image first.
FROM runtime AS baked
ARG MODEL=smollm2-135m-instruct-q4_1
RUN hearth pull "${MODEL}"
ENV HEARTH_MODEL=${MODEL}
