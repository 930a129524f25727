#!/usr/bin/env bash
# clang-tidy over the project's C++ (config: .clang-tidy; warnings are errors).
#
#   tools/tidy.sh [--fast] [--fix] [--config=NAME] [--since=REV] [path-regex]
#       e.g. tools/tidy.sh services/audit/
#
# --since=REV checks only the .cc files that changed between REV and the working
# tree, and the .cc files that include a header (or a .proto's generated header)
# that changed (directly or through other project headers); everything when the
# lint configuration or the build's flags changed (.clang-tidy, .bazelrc, bazel/,
# WORKSPACE; a change to this script's own clang-tidy flags needs a full run by hand,
# then a new .ci/tidy-clean). tools/test.sh passes the last commit a full run found
# clean (.ci/tidy-clean) so that CI stays inside its time budget.
#
# --fast skips the clang-analyzer-* checks (two thirds of the time; CI runs --fast;
# a --fast run over all 169 files took 24 min on 2 cores). --fix applies
# clang-tidy's fixes to the .cc files (headers are left to a human: several files
# include them).
#
# The compile commands come from Bazel itself (`bazel aquery` of every CppCompile
# action), so clang-tidy sees exactly the flags and generated headers of the build;
# the few gcc-only flags are dropped. --config=NAME reads them from that Bazel config
# (tools/test.sh passes --config=asan: the build it has just made). The script runs
# `bazel build //...` with that config first, for the generated protobuf headers.
# Exit 1 when any file has a finding, 2 when nothing matches the path regex.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
fast=0 fix=0 filter='^(services|clients|tools|tests)/' bazel_flags=() since=""
for a in "$@"; do
  case "$a" in
    --fast) fast=1 ;;
    --fix) fix=1 ;;
    --since=*) since="${a#*=}" ;;
    --config=*) bazel_flags+=("$a") ;;
    -*) echo "tidy: unknown option $a" >&2; exit 2 ;;
    *) filter="$a" ;;
  esac
done
extra=(--extra-arg=-Wno-unknown-warning-option)
((fast)) && extra+=("--checks=-clang-analyzer-*")
((fix)) && extra+=(--fix --header-filter='^$')
jobs="$(nproc)"
changed=""
if [[ -n "$since" ]]; then
  git rev-parse --verify -q "$since^{commit}" >/dev/null ||
    { echo "tidy: --since=$since is not a commit here" >&2; exit 2; }
  # Committed since REV, plus what is not committed yet.
  changed="$( { git diff --name-only "$since" -- ; git ls-files --others --exclude-standard; } |
    sort -u)"
  if grep -qE '^(\.clang-tidy|\.bazelrc|WORKSPACE|bazel/)' <<<"$changed"; then
    echo "tidy: the lint configuration changed since $since: checking everything" >&2
    changed=""
    since=""
  fi
fi

bazel build "${bazel_flags[@]}" //... >/dev/null 2>&1 ||
  { echo "tidy: 'bazel build ${bazel_flags[*]} //...' failed; run it to see why" >&2; exit 2; }
execroot="$(bazel info "${bazel_flags[@]}" execution_root 2>/dev/null)"
db="$(mktemp -d /tmp/iotauth-tidy.XXXXXX)"
trap 'rm -rf "$db"' EXIT
# `//...` leaves out targets tagged manual (benchmarks built on demand): they are
# named one by one, so their sources are checked too.
# (`query` takes no build --config: it is run without the flags.)
manual="$( (bazel query 'kind("cc_binary|cc_test", attr(tags, "manual", //...))' 2>/dev/null || true) |
  paste -sd+ -)"
bazel aquery "${bazel_flags[@]}" --output=jsonproto \
  "mnemonic(\"CppCompile\", //...${manual:+ + $manual})" 2>/dev/null >"$db/aquery.json"
printf '%s\n' "$changed" >"$db/changed"
/usr/bin/python3 - "$db" "$execroot" "$filter" "$since" <<'PY'
import json, os, re, sys
db, execroot, pattern, since = sys.argv[1], sys.argv[2], re.compile(sys.argv[3]), sys.argv[4]
changed = {l.strip() for l in open(os.path.join(db, "changed")) if l.strip()}
# Headers whose change can move a finding: the project's own, and a .proto's generated ones.
headers = {c for c in changed if c.endswith(".h")}
headers |= {c[:-len(".proto")] + ext for c in changed if c.endswith(".proto")
            for ext in (".pb.h", ".grpc.pb.h")}
def read(path):
    try:
        return open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        return ""
# A project header that includes a changed header (at any depth) counts as changed.
if since and headers:
    project = [os.path.join(d, f) for top in ("services", "clients", "tools", "tests", "proto")
               for d, _, fs in os.walk(top) for f in fs if f.endswith(".h")]
    texts = {h: read(h) for h in project}
    grew = True
    while grew:
        grew = False
        for h, text in texts.items():
            if h not in headers and any('#include "%s"' % c in text for c in headers):
                headers.add(h)
                grew = True
def selected(src):
    if not since:
        return True
    if src in changed:
        return True
    text = read(src)
    return any('#include "%s"' % h in text for h in headers)
# gcc-only flags clang rejects; -Werror is left to clang-tidy's WarningsAsErrors.
drop = {"-fno-canonical-system-headers", "-Wno-free-nonheap-object", "-Werror",
        "-Wunused-but-set-parameter"}
entries, seen = [], set()
for action in json.load(open(os.path.join(db, "aquery.json"))).get("actions", []):
    args = action["arguments"]
    src = args[args.index("-c") + 1] if "-c" in args else None
    if not src or not pattern.search(src) or not src.endswith(".cc") or src in seen:
        continue
    if not selected(src):
        continue
    seen.add(src)
    args = ["clang++"] + [a for a in args[1:] if a not in drop]
    entries.append({"directory": execroot, "file": src, "arguments": args})
json.dump(entries, open(os.path.join(db, "compile_commands.json"), "w"))
# Largest first, so the run does not end on one long file.
def size(src):
    path = os.path.join(execroot, src)
    return os.path.getsize(path) if os.path.exists(path) else 0
with open(os.path.join(db, "files"), "w") as f:
    f.writelines(src + "\n" for src in sorted(seen, key=lambda src: (-size(src), src)))
PY
total=$(wc -l <"$db/files")
if ((total == 0)) && [[ -n "$since" ]]; then
  echo "tidy: no .cc file (or header one includes) changed since $since: nothing to check" >&2
  exit 0
fi
if ((total == 0)); then
  echo "tidy: no compiled .cc file matches '$filter'" >&2
  exit 2
fi
echo "tidy: $total files${since:+ (changed since $since, or including a changed header)}, $jobs at a time (each takes a few seconds)" >&2
# One clang-tidy per file, $jobs running at any time (xargs -P: no waiting for the
# slowest of a group); findings print as they come, with a running count.
export execroot db ROOT total
export TIDY_EXTRA="${extra[*]}" TIDY_TTY="$([[ -t 2 ]] && echo 1 || echo 0)"
: >"$db/done"
fail=0
xargs -d '\n' -r -a "$db/files" -P "$jobs" -n 1 bash -c '
  set -f  # TIDY_EXTRA holds a glob (--checks=-clang-analyzer-*)
  f="$1"
  out="$(cd "$execroot" && clang-tidy -p "$db" --quiet --config-file="$ROOT/.clang-tidy" \
         $TIDY_EXTRA "$f" 2>&1)"
  rc=$?
  n=$( (echo "$f" >>"$db/done"; wc -l <"$db/done") )
  if ((rc != 0)); then
    printf "%s\n" "$out" | grep -v "warnings generated\|^Suppressed\|Use -header-filter\|Use -system-headers"
    echo "tidy: FINDINGS in $f" >&2
  fi
  # A live counter on a terminal; a line every 20 files in a log (CI).
  if ((TIDY_TTY)); then
    printf "tidy: %d/%d\r" "$n" "$total" >&2
  elif ((n % 20 == 0)); then
    echo "tidy: $n/$total" >&2
  fi
  ((rc == 0)) || exit 1  # 255 would stop xargs before the other files
' _ || fail=1
echo "tidy: $(wc -l <"$db/done")/$total files checked" >&2
exit $fail
