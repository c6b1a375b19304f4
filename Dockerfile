# Multi-stage build: compile in the Rust image, run on a slim Debian with only the binary.
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/order-service order-service \
    && mkdir -p /var/lib/order-service && chown order-service /var/lib/order-service
COPY --from=build /src/target/release/order-service /usr/local/bin/order-service
USER order-service
WORKDIR /var/lib/order-service
ENV DATA_DIR=/var/lib/order-service/data HOST=0.0.0.0 PORT=3000 LOG_FORMAT=json
EXPOSE 3000 9091
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://localhost:3000/health || curl -fsS http://localhost:9091/health || exit 1
ENTRYPOINT ["order-service"]
CMD ["serve"]
