# shmpipe container images.
#
#   docker build --target sidecar -t shmpipe-sidecar .
#   docker build --target agent   -t shmpipe-agent   .
#
# Stages:
#   sidecar-build  official Rust image, builds target/release/shmpipe-sidecar
#   agent-build    node:20-bookworm (has g++), builds ts-lib/dist and the native addon
#   sidecar        debian:bookworm-slim + the sidecar binary
#   agent          node:20-bookworm-slim + ts-lib/dist, the addon and package.json
#
# Both builders and both final images are Debian 12 (bookworm), so the glibc the binary and
# the addon were linked against is the one they run on.
#
# Both final images run as the same fixed non-root uid/gid 10001:10001. The sidecar admits a
# client on its control socket only if SO_PEERCRED reports an allowed uid (by default its own),
# so the agent and the sidecar must share this uid. deploy/kubernetes sets the same ids.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=20

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS sidecar-build
WORKDIR /src
# The whole workspace is needed: Cargo.toml lists both members, and cargo checks every
# declared target (benches, tests) of every member even when building one package.
COPY Cargo.toml Cargo.lock ./
COPY shm-protocol ./shm-protocol
COPY sidecar ./sidecar
RUN cargo build --release --locked -p shmpipe-sidecar \
 && strip --strip-debug target/release/shmpipe-sidecar

# ---------------------------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm AS agent-build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY ts-lib ./ts-lib
# `npm run build` would also run build:sidecar (cargo), which this image does not have: the
# sidecar is built in its own stage. Run the two Node-side steps of it instead.
RUN npm run build:addon && npm run build:ts \
 && test -f ts-lib/dist/index.js \
 && test -f ts-lib/dist/cli.js \
 && test -f ts-lib/build/shmpipe_addon.node

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS sidecar
# ca-certificates: the store client (rustls with the platform verifier) reads the system root
# certificates for https:// S3 endpoints; the slim image has none.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shmpipe \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin shmpipe \
 && install -d -o 10001 -g 10001 -m 0700 /run/shmpipe
COPY --from=sidecar-build /src/target/release/shmpipe-sidecar /usr/local/bin/shmpipe-sidecar
# /run/shmpipe holds the control socket and the per-client segment files. Mount a tmpfs there
# (Kubernetes: an emptyDir with medium: Memory, shared with the agent container; docker:
# --tmpfs /run/shmpipe:uid=10001,gid=10001,size=...) - /dev/shm is per container and small.
# The admin listener must bind a non-loopback address in a container: Kubernetes probes and
# Prometheus reach it through the pod IP.
ENV SHMPIPE_SOCKET=/run/shmpipe/sidecar.sock \
    SHMPIPE_SEGMENT_DIR=/run/shmpipe \
    SHMPIPE_ADMIN_ADDR=0.0.0.0:9464 \
    SHMPIPE_LOG_FORMAT=json
EXPOSE 9464
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/shmpipe-sidecar"]

# ---------------------------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS agent
RUN groupadd --system --gid 10001 shmpipe \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin shmpipe
WORKDIR /app
# esbuild bundles the production dependencies into ts-lib/dist, so no node_modules here.
COPY --from=agent-build /src/package.json /app/package.json
COPY --from=agent-build /src/ts-lib/dist /app/ts-lib/dist
COPY --from=agent-build /src/ts-lib/build/shmpipe_addon.node /app/ts-lib/build/shmpipe_addon.node
ENV NODE_ENV=production \
    SHMPIPE_SIDECAR_SOCKET=/run/shmpipe/sidecar.sock
USER 10001:10001
ENTRYPOINT ["node", "--max-semi-space-size=2", "/app/ts-lib/dist/cli.js"]
