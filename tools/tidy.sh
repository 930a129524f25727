#!/usr/bin/env bash
# clang-tidy over the project's C++ (config: .clang-tidy; warnings are errors).
#
#   tools/tidy.sh [--fast] [--fix] [path-regex]    e.g. tools/tidy.sh services/audit/
#
# --fast skips the clang-analyzer-* checks (two thirds of the time; CI runs --fast,
# a full run takes ~15 min on 2 cores). --fix applies clang-tidy's fixes to the .cc
# files (headers are left to a human: several files include them).
#
# The compile commands come from Bazel itself (`bazel aquery` of every CppCompile
# action), so clang-tidy sees exactly the flags and generated headers of the build;
# the few gcc-only flags are dropped. Needs a prior `bazel build //...` (tools/test.sh
# does one) for the generated protobuf headers. Exit 1 when any file has a finding.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
fast=0 fix=0 filter='^(services|clients|tools|tests)/'
for a in "$@"; do
  case "$a" in
    --fast) fast=1 ;;
    --fix) fix=1 ;;
    -*) echo "tidy: unknown option $a" >&2; exit 2 ;;
    *) filter="$a" ;;
  esac
done
extra=(--extra-arg=-Wno-unknown-warning-option)
((fast)) && extra+=("--checks=-clang-analyzer-*")
((fix)) && extra+=(--fix --header-filter='^$')
jobs="$(nproc)"

bazel build //... >/dev/null 2>&1 || { echo "tidy: 'bazel build //...' failed; run it to see why" >&2; exit 2; }
execroot="$(bazel info execution_root 2>/dev/null)"
db="$(mktemp -d /tmp/iotauth-tidy.XXXXXX)"
trap 'rm -rf "$db"' EXIT
bazel aquery --output=jsonproto 'mnemonic("CppCompile", //...)' 2>/dev/null >"$db/aquery.json"
/usr/bin/python3 - "$db" "$execroot" "$filter" <<'PY'
import json, os, re, sys
db, execroot, pattern = sys.argv[1], sys.argv[2], re.compile(sys.argv[3])
# gcc-only flags clang rejects; -Werror is left to clang-tidy's WarningsAsErrors.
drop = {"-fno-canonical-system-headers", "-Wno-free-nonheap-object", "-Werror",
        "-Wunused-but-set-parameter"}
entries, seen = [], set()
for action in json.load(open(os.path.join(db, "aquery.json"))).get("actions", []):
    args = action["arguments"]
    src = args[args.index("-c") + 1] if "-c" in args else None
    if not src or not pattern.search(src) or not src.endswith(".cc") or src in seen:
        continue
    seen.add(src)
    args = ["clang++"] + [a for a in args[1:] if a not in drop]
    entries.append({"directory": execroot, "file": src, "arguments": args})
json.dump(entries, open(os.path.join(db, "compile_commands.json"), "w"))
with open(os.path.join(db, "files"), "w") as f:
    f.write("\n".join(sorted(seen)) + "\n")
PY
total=$(wc -l <"$db/files")
echo "tidy: $total files, $jobs at a time (each takes a few seconds)" >&2
fail=0
n=0
# One clang-tidy per file; print findings as they come and a running count.
while read -r f; do
  n=$((n + 1))
  (
    out="$(cd "$execroot" && clang-tidy -p "$db" --quiet --config-file="$ROOT/.clang-tidy" \
           "${extra[@]}" "$f" 2>&1)" || {
      printf '%s\n' "$out" | grep -v "warnings generated\|^Suppressed\|Use -header-filter\|Use -system-headers"
      echo "tidy: FINDINGS in $f" >&2
      exit 1
    }
  ) &
  if (( n % jobs == 0 )); then
    for p in $(jobs -p); do wait "$p" || fail=1; done
    # A live counter on a terminal; a line every 20 files in a log (CI).
    if [[ -t 2 ]]; then
      printf 'tidy: %d/%d\r' "$n" "$total" >&2
    elif (( n % 20 == 0 )); then
      echo "tidy: $n/$total" >&2
    fi
  fi
done <"$db/files"
for p in $(jobs -p); do wait "$p" || fail=1; done
echo "tidy: $n/$total files checked" >&2
exit $fail
