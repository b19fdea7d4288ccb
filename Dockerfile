# Tessera's container image: a static-enough release binary on distroless, as a non-root user,
# with no shell or package manager in the runtime image.
#
#   docker build -t tessera .
#   docker run --rm -p 50051:50051 -p 9090:9090 -e TESSERA_DATABASE_URL=postgres://… tessera

FROM rust:1 AS build
WORKDIR /src
# protox compiles the protos (no protoc); SQLite and ring build with the image's C compiler.
COPY . .
# Release symbols are for profiling on developer machines, not for the image.
ENV CARGO_PROFILE_RELEASE_DEBUG=0
# Only the server's package: the load generator (bench/) is a workspace member, not in the image.
RUN cargo build --release --locked -p tessera --bin tessera \
 && mkdir -p /out/data \
 && cp target/release/tessera /out/tessera

# glibc and libgcc, nothing else; the `nonroot` variant runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tessera /usr/local/bin/tessera
# The working directory, writable by the non-root user: the default SQLite file and the
# bootstrap admin key go here (mount a volume to keep them).
COPY --from=build --chown=65532:65532 /out/data /var/lib/tessera
WORKDIR /var/lib/tessera
USER 65532:65532
ENV TESSERA_LISTEN=0.0.0.0:50051 \
    TESSERA_METRICS_LISTEN=0.0.0.0:9090 \
    TESSERA_LOG_FORMAT=json
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve"]
