#!/usr/bin/env bash
# Runs the broker end-to-end test with Debian's interpreter (which sees Debian's
# python3-grpcio and python3-paho-mqtt), importing the shared harness from the source
# tree next to this package.
set -euo pipefail
script="$1"
shift
cd "$(dirname "$0")/../../.."
src_dir="$(dirname "$(readlink -f "$script")")"
export PYTHONPATH="$src_dir/..${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 -u "$script" "$@"
