# finsync: one image for every role (serve, worker, scheduler, sandbox, migrate, …);
# the role is the command, e.g. `docker run IMAGE serve`. See docker-compose.yml.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin finsync \
    && cp target/release/finsync /usr/local/bin/finsync

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --user-group --uid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin finsync
COPY --from=builder /usr/local/bin/finsync /usr/local/bin/finsync
COPY config/ /app/config/
COPY connectors/ /app/connectors/
# The embedded mode (`demo`, or no FINSYNC_ENV) keeps its SQLite file and vault key
# under ./data/.
RUN mkdir -p /app/data && chown finsync:finsync /app/data
WORKDIR /app
ENV FINSYNC_CONFIG_DIR=/app/config
USER finsync
EXPOSE 8080 8091
ENTRYPOINT ["finsync"]
