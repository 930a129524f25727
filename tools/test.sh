#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, build with warnings as errors, unit
# and end-to-end tests, clang-tidy (warnings are errors), the same suite under
# ASan+UBSan, a fuzzing smoke run of every libFuzzer target, and a format check.
#
#   tools/test.sh            everything
#   tools/test.sh --quick    build + tests only (no tidy, no sanitizer pass, no fuzzing)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

start=$(date +%s)
# Each step's line carries the time since the start, so a slow CI run shows where
# its minutes went.
step() { printf '\n==> [%4ds] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

step "setup (installs missing Debian/npm packages)"
tools/setup.sh

TEST_ENV=(--test_env=IOTAUTH_ROOT="$ROOT" --test_env=IOTAUTH_VECTORS_DIR="$(cd "$ROOT/.." && pwd)/shared/vectors")

step "format check (clang-format, Google style)"
tools/format.sh --check

step "build and test: bazel test //..."
bazel test "${TEST_ENV[@]}" //...

if (( ! quick )); then
  # Before the sanitizer build, which would replace the outputs tidy reads.
  step "clang-tidy over every .cc (fast checks; 'tools/tidy.sh' alone adds clang-analyzer)"
  tools/tidy.sh --fast

  step "sanitizers: bazel test --config=asan //... (ASan + UBSan)"
  bazel test --config=asan "${TEST_ENV[@]}" \
    --test_env=LSAN_OPTIONS=suppressions="$ROOT/tools/lsan.supp":print_suppressions=0 //...

  step "fuzzing smoke run (libFuzzer, clang-14)"
  tools/fuzz.sh --smoke
fi

step "all tests passed in $(( $(date +%s) - start ))s"
