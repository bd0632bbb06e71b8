#!/usr/bin/env bash
# Installs the Debian 12 packages sandboxlet needs to build, test and run. Idempotent.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (apt-get install needs it)" >&2
  exit 1
fi
packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates curl openssl coreutils findutils
  libabsl-dev libcurl4-openssl-dev nlohmann-json3-dev libyaml-cpp-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  prometheus-cpp-dev libsqlite3-dev libcpprest-dev prometheus
  libgtest-dev libgmock-dev libbenchmark-dev
  golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev
  iproute2 iptables nftables util-linux mount e2fsprogs xfsprogs btrfs-progs procps psmisc
  clang-format
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
