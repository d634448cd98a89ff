# The Operon core as a small static image: built against musl, run on distroless/static as a
# non-root user. Build from the repository root:
#   docker build -f deploy/docker/core.Dockerfile -t operon:0.1.0 .
# (Not built by the tests: the project's machine has no container runtime.)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN rustup target add x86_64-unknown-linux-musl \
 && cargo build --release --locked -p operon --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/operon /operon

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /operon /operon
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/operon"]
CMD ["run", "--help"]
