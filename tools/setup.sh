#!/usr/bin/env bash
# Installs everything iotauth needs on a fresh Debian 12 machine. Idempotent and
# quiet when everything is already present. Used by both README commands and CI.
set -euo pipefail

APT_PACKAGES=(
  # build
  bazel-bootstrap pkg-config g++ clang-14 libclang-rt-14-dev clang-format clang-tidy
  # libraries
  libgrpc++-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev grpc-proto
  libabsl-dev libssl-dev openssl prometheus-cpp-dev libgtest-dev libgmock-dev
  libsqlite3-dev libpq-dev libjemalloc-dev
  # end-to-end peers and tools
  python3-grpcio python3-protobuf python3-paho-mqtt python3-cryptography python3-h2 mosquitto
  mosquitto-dev
  libmosquitto-dev mosquitto-clients nghttp2-client prometheus postgresql
  curl ca-certificates
  # benchmarks: instruction counts (tools/bench/callgrind_bench.sh)
  valgrind
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${#missing[@]} Debian packages: ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts these daemons on install; tests start their own instances.
  for svc in mosquitto prometheus postgresql; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm is missing; installing Debian's nodejs and npm" >&2
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# buf (grpcurl-like client) from npm, installed into the project's tool folder.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUF_DIR="$ROOT/.tools/npm"
if [[ ! -x "$BUF_DIR/node_modules/.bin/buf" ]]; then
  echo "setup: installing @bufbuild/buf from npm into .tools/npm" >&2
  mkdir -p "$BUF_DIR"
  (cd "$BUF_DIR" && npm install --silent --no-audit --no-fund --prefix . @bufbuild/buf@1 >/dev/null)
fi
