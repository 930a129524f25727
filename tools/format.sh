#!/usr/bin/env bash
# clang-format (Google base, see .clang-format) over the project's C++ sources.
#   tools/format.sh          reformat in place
#   tools/format.sh --check  fail listing files that are not formatted
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- \
  'services/*.cc' 'services/*.h' 'clients/*.cc' 'clients/*.h' 'tools/*.cc' 'tools/*.h' 'tests/*.cc' 'tests/*.h')
((${#files[@]})) || exit 0
if [[ "${1:-}" == "--check" ]]; then
  bad=()
  for f in "${files[@]}"; do
    [[ -f "$f" ]] || continue
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then bad+=("$f"); fi
  done
  if ((${#bad[@]})); then
    echo "not clang-formatted (run tools/format.sh): ${bad[*]}" >&2
    exit 1
  fi
else
  clang-format -i "${files[@]}"
fi
