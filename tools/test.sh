#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, a format check, every target built
# with warnings as errors and every unit and end-to-end test run, all under
# ASan+UBSan; clang-tidy (warnings are errors) over that build; a fuzzing smoke run
# of every libFuzzer target.
#
#   tools/test.sh            everything
#   tools/test.sh --quick    plain build + tests only (no sanitizers, tidy or fuzzing)
#
# The full run builds and tests once, with the sanitizers on: the same tests with
# more checks. A second, plain pass cost 5-6 of CI's 30 minutes on 2 cores. What it
# gives up: the sanitized binaries use the system malloc, so CI does not link the
# jemalloc variant the optimised build ships (tools/run.sh builds that one).
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

if (( quick )); then
  step "build and test: bazel test //..."
  bazel test "${TEST_ENV[@]}" //...
else
  step "build and test under sanitizers: bazel test --config=asan //... (ASan + UBSan)"
  bazel test --config=asan "${TEST_ENV[@]}" \
    --test_env=LSAN_OPTIONS=suppressions="$ROOT/tools/lsan.supp":print_suppressions=0 //...

  # The compile commands and generated headers of the build above. A full pass
  # over every file takes 11-40 minutes on 2 cores, depending on the machine's
  # day: more than CI's budget allows. So CI checks what changed since the last
  # commit a full pass found clean (.ci/tidy-clean: record it after running
  # `tools/tidy.sh --fast`), and everything when there is no such commit in the
  # history or IOTAUTH_FULL_TIDY=1.
  tidy_since=""
  if [[ "${IOTAUTH_FULL_TIDY:-0}" != 1 && -f .ci/tidy-clean ]]; then
    tidy_since="$(tr -d '[:space:]' <.ci/tidy-clean)"
    git merge-base --is-ancestor "$tidy_since" HEAD 2>/dev/null || tidy_since=""
  fi
  if [[ -n "$tidy_since" ]]; then
    step "clang-tidy over the .cc files changed since ${tidy_since:0:12} (the last full clean pass, .ci/tidy-clean) and those including a changed header (fast checks)"
    tools/tidy.sh --fast --config=asan --since="$tidy_since"
  else
    step "clang-tidy over every .cc (fast checks; 'tools/tidy.sh' alone adds clang-analyzer)"
    tools/tidy.sh --fast --config=asan
  fi

  step "fuzzing smoke run (libFuzzer, clang-14)"
  tools/fuzz.sh --smoke
fi

step "all tests passed in $(( $(date +%s) - start ))s"
