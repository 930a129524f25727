#!/usr/bin/env bash
# Runs a Python end-to-end test with Debian's interpreter (which sees Debian's
# python3-grpcio and python3-paho-mqtt); the python3 on PATH may be another install.
set -euo pipefail
script="$1"
shift
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/tests/e2e${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 -u "$script" "$@"
