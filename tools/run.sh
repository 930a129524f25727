#!/usr/bin/env bash
# Builds and runs the all-in-one server on embedded development defaults (data in
# ./iotauth-data, a generated dev PKI, listening on localhost). Extra arguments go
# to iotauthd, e.g. tools/run.sh --set=log.level=debug
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
tools/setup.sh
echo "==> building iotauthd and iotauthctl (first build takes a few minutes)" >&2
bazel build --config=opt //services/server:iotauthd //clients/iotauthctl:iotauthctl
exec bazel-bin/services/server/iotauthd "$@"
