# A stand-in for the official `rust` image, for machines that cannot pull it: the Debian base
# the test imported, a C compiler, and the Rust toolchain of the machine that runs the test
# (`rustc --print sysroot` without its docs), copied in as `toolchain/` of the build context.
# scripts/deploy-containers builds it and passes it to deploy/docker/Dockerfile as
# BUILDER_IMAGE.

ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY toolchain/ /usr/local/rust/
ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo

RUN rustc --version && cargo --version
