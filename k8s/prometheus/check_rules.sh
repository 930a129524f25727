#!/usr/bin/env bash
# Checks the alerting rules (promtool check rules) and runs their unit tests
# (promtool test rules). Run by `bazel test //k8s:prometheus_rules_test`, or by hand.
set -euo pipefail
# By hand the rules sit beside this script; under Bazel the script is copied to
# k8s/prometheus_rules_test and the rules are runfiles under k8s/prometheus.
here="$(dirname "$0")"
if [[ -f "$here/iotauth-rules.yaml" ]]; then cd "$here"; else cd "$here/prometheus"; fi
if ! command -v promtool >/dev/null; then
  echo "promtool not found: run tools/setup.sh (Debian package prometheus)" >&2
  exit 1
fi
promtool check rules iotauth-rules.yaml
promtool test rules iotauth-rules_test.yaml
