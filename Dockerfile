# syntax=docker/dockerfile:1
# The sandboxlet node agent image: the daemon, the Cloud Hypervisor it runs microVMs with, and the
# host tools it calls (nft, ip, dmsetup, losetup). Deployed as a DaemonSet (deploy/, charts/).
#
#   docker build --build-arg CH_SHA256=<sha256 of the cloud-hypervisor release asset> \
#     -t ghcr.io/sandboxlet/sandboxlet:0.1.0 .
#
# CH_SHA256 has no default on purpose: it is the SHA-256 of the cloud-hypervisor-static asset (or
# cloud-hypervisor-static-aarch64 for arm64) of release v${CH_VERSION}, recorded once by whoever
# bumps CH_VERSION (see docs/deploy.md, "Building the image"). The build fails without it and when
# the download does not match it.

ARG CH_VERSION=48.0

# ---- build: the same Debian packages as development and CI (scripts/install-deps.sh) ----
FROM debian:12 AS build
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DSANDBOXLET_BUILD_TESTS=OFF -DSANDBOXLET_BUILD_BENCH=OFF \
    && cmake --build /build --target sandboxlet \
    && install -D -m 0755 -s /build/cmd/sandboxlet/sandboxlet /out/sandboxlet

# ---- cloud-hypervisor: the static release binary, pinned and checksummed ----
FROM debian:12-slim AS cloud-hypervisor
ARG CH_VERSION
ARG CH_SHA256
ARG TARGETARCH
RUN if [ -z "${CH_SHA256}" ]; then \
        echo "CH_SHA256 is required: --build-arg CH_SHA256=<sha256 of cloud-hypervisor v${CH_VERSION}> (docs/deploy.md)" >&2; \
        exit 1; \
    fi
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN case "${TARGETARCH:-amd64}" in \
        amd64) asset=cloud-hypervisor-static ;; \
        arm64) asset=cloud-hypervisor-static-aarch64 ;; \
        *) echo "no cloud-hypervisor release binary for ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && curl -fsSL --retry 3 -o /cloud-hypervisor \
        "https://github.com/cloud-hypervisor/cloud-hypervisor/releases/download/v${CH_VERSION}/${asset}" \
    && echo "${CH_SHA256}  /cloud-hypervisor" | sha256sum -c - \
    && chmod 0755 /cloud-hypervisor

# ---- runtime ----
FROM debian:12-slim
# Shared libraries of the daemon (Debian 12 names), then the programs it runs: nft (NAT rules),
# ip, dmsetup and losetup (root disks; losetup comes with the base image's mount package),
# mkfs/e2fsck for ext4 images, ps/kill for operators.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libabsl20220623 libprotobuf32 libgrpc++1.51 libyaml-cpp0.7 libsqlite3-0 libcurl4 \
        libssl3 libprometheus-cpp-core1.0 libcivetweb1 \
        ca-certificates iproute2 iptables nftables util-linux dmsetup e2fsprogs procps \
    && rm -rf /var/lib/apt/lists/*
COPY --from=cloud-hypervisor /cloud-hypervisor /usr/local/bin/cloud-hypervisor
COPY --from=build /out/sandboxlet /usr/local/bin/sandboxlet
# Fail the build, not the pod, when a shared library is missing from the list above.
RUN ! ldd /usr/local/bin/sandboxlet | grep "not found" \
    && /usr/local/bin/sandboxlet version \
    && /usr/local/bin/cloud-hypervisor --version
# State lives on the node (hostPath volumes): /var/lib/sandboxlet, /run/sandboxlet, /run/netns.
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/sandboxlet"]
CMD ["run"]
