#!/usr/bin/env bash
# Checks the Grafana dashboard: valid JSON, unique panel ids, every panel on the
# Prometheus data source variable, and every query valid PromQL (each is written,
# with Grafana's variables filled in, as a recording rule that `promtool check rules`
# parses). Run by `bazel test //k8s:grafana_dashboard_test`, or by hand.
set -euo pipefail
here="$(dirname "$0")"
if [[ -f "$here/iotauth-dashboard.json" ]]; then dash="$here/iotauth-dashboard.json"; else
  dash="$here/grafana/iotauth-dashboard.json"; fi
if ! command -v promtool >/dev/null; then
  echo "promtool not found: run tools/setup.sh (Debian package prometheus)" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$dash" "$tmp/rules.yaml" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
ids, rules = set(), []
for p in dash["panels"]:
    assert p["id"] not in ids, "duplicate panel id %d" % p["id"]
    ids.add(p["id"])
    if p["type"] == "row":
        continue
    assert p["datasource"]["uid"] == "${datasource}", "panel %r: not on the data source variable" % p["title"]
    assert p["targets"], "panel %r has no query" % p["title"]
    for t in p["targets"]:
        expr = t["expr"].replace("$__rate_interval", "5m").replace("$job", ".+")
        assert "$" not in expr, "panel %r: unknown variable in %r" % (p["title"], t["expr"])
        rules.append((p["id"], t["refId"], expr))
with open(sys.argv[2], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for pid, ref, expr in rules:
        f.write("      - record: dashboard:panel_%d_%s\n        expr: %s\n" % (pid, ref, json.dumps(expr)))
print("%d panels, %d queries" % (len(ids), len(rules)))
PY
promtool check rules "$tmp/rules.yaml"
