#!/usr/bin/env bash
# Builds every libFuzzer target (Bazel targets tagged "fuzz") with clang-14,
# ASan and UBSan, and runs each on a copy of its seed corpus.
#   tools/fuzz.sh --smoke          a short run of each (CI: 6 s, IOTAUTH_FUZZ_SMOKE_SECONDS)
#   tools/fuzz.sh [SECONDS]        a longer run of each (default 300 s)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
secs=300
[[ "${1:-}" == "--smoke" ]] && secs="${IOTAUTH_FUZZ_SMOKE_SECONDS:-6}"
[[ "${1:-}" =~ ^[0-9]+$ ]] && secs="$1"

mapfile -t targets < <(bazel query --noshow_progress 'attr(tags, "\bfuzz\b", //...)' 2>/dev/null)
if ((${#targets[@]} == 0)); then
  echo "fuzz: no targets tagged fuzz" >&2
  exit 1
fi
# One output base per checkout: Bazel ties an output base to one workspace.
OUT_BASE="${IOTAUTH_FUZZ_OUTPUT_BASE:-$HOME/.cache/bazel-iotauth-fuzz-$(printf %s "$ROOT" | sha256sum | cut -c1-12)}"
echo "fuzz: building ${#targets[@]} targets with clang-14 (output base $OUT_BASE)" >&2
CC=clang-14 CXX=clang++-14 bazel --output_base="$OUT_BASE" build --config=fuzz "${targets[@]}"
BIN="$(CC=clang-14 bazel --output_base="$OUT_BASE" info --config=fuzz bazel-bin 2>/dev/null)"

failed=0
for t in "${targets[@]}"; do
  pkg="${t%%:*}"; pkg="${pkg#//}"; name="${t##*:}"
  corpus_src="$pkg/${name}_corpus"
  work="$(mktemp -d)"
  [[ -d "$corpus_src" ]] && cp -r "$corpus_src/." "$work/"
  echo "fuzz: $t for ${secs}s ($(ls "$work" | wc -l) seeds)" >&2
  if ! "$BIN/$pkg/$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "$work" >"$work.log" 2>&1; then
    echo "fuzz: $t FAILED; last lines:" >&2
    tail -40 "$work.log" >&2
    failed=1
  else
    grep -E 'stat::number_of_executed_units|cov:' "$work.log" | tail -1 >&2 || true
  fi
  rm -rf "$work" "$work.log"
done
exit $failed
