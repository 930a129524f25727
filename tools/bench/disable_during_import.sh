#!/usr/bin/env bash
# How long a disable takes to reach Authenticate while a bulk import's change
# backlog is being mirrored (issue: identity hot path, "a disable takes effect
# within 1 second"; see ARCHITECTURE.md, "A bulk import does not hold back a
# disable"):
#
#   tools/bench/disable_during_import.sh [DEVICES (300000)] [DELAY_S (3)]
#
# 1. builds iotauthd and iotauthctl with -c opt;
# 2. starts iotauthd on a fresh data directory (plaintext, caller auth off) and
#    registers one SAS device, "victim", and checks that it authenticates;
# 3. writes DEVICES random devices to a CSV (in Python, not by project code) and
#    starts `iotauthctl device import` in the background;
# 4. DELAY_S seconds in, disables the victim, then authenticates it in a loop
#    (iotauthctl, ~20 a second) until the answer is no longer allow;
# 5. prints when the disable happened, how long the deny took, and when the import
#    finished. Exit status 0 whatever the figures (it measures, it does not judge).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
devices="${1:-300000}"
delay="${2:-3}"
[[ "$devices" =~ ^[0-9]+$ && "$delay" =~ ^[0-9.]+$ ]] ||
  { echo "usage: $0 [DEVICES] [DELAY_S]" >&2; exit 2; }

echo "==> building iotauthd and iotauthctl (-c opt)" >&2
bazel build -c opt //services/server:iotauthd //clients/iotauthctl:iotauthctl >&2
B="$ROOT/bazel-out/k8-opt/bin"
work="$(mktemp -d /tmp/iotauth-disable-import.XXXXXX)"
spid=""
cleanup() {
  [[ -n "$spid" ]] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

/usr/bin/python3 - "$work/devices.csv" "$devices" <<'PY'
import base64, os, sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("device_id,product_key,status,primary_key,secondary_key\n")
    for i in range(n):
        k = base64.b64encode(os.urandom(32)).decode()
        f.write("imp-%07d,pk,enabled,%s,%s\n" % (i, k, k))
PY

"$B/services/server/iotauthd" --data_dir="$work/data" --set=grpc.address=127.0.0.1:0 \
  --set=metrics.address= --set=grpc.tls.mode=insecure --set=auth.disabled=true \
  --set=log.level=warn --announce_port >"$work/out" 2>"$work/err" &
spid=$!
for _ in $(seq 1 600); do
  grep -q '^LISTENING ' "$work/out" && break
  kill -0 "$spid" 2>/dev/null || { echo "iotauthd did not start:" >&2; cat "$work/err" >&2; exit 1; }
  sleep 0.1
done
port="$(awk '/^LISTENING /{print $2; exit}' "$work/out")"
[[ -n "$port" ]] || { echo "iotauthd did not announce its port" >&2; exit 1; }
CTL=("$B/clients/iotauthctl/iotauthctl" --insecure --address "127.0.0.1:$port")

"${CTL[@]}" tenant create t --hub_host hub.example.net >/dev/null
"${CTL[@]}" product create pk --tenant t --credential_types sas >/dev/null
"${CTL[@]}" device create victim --tenant t --product pk >/dev/null
key="$("${CTL[@]}" device get victim --tenant t --show_keys --json |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["credentials"]["symmetricKey"]["primaryKey"])')"
token="$("${CTL[@]}" token sas --hub hub.example.net --device victim --key "$key" --ttl 1h)"
allowed() { "${CTL[@]}" authenticate --client_id victim --sas_token "$token" 2>/dev/null | grep -q 'allow'; }
allowed || { echo "the victim does not authenticate before the import" >&2; exit 1; }

echo "==> importing $devices devices; disabling the victim ${delay}s in" >&2
start=$(date +%s.%N)
"${CTL[@]}" device import --tenant t --file "$work/devices.csv" --no_progress >&2 &
ipid=$!
sleep "$delay"
"${CTL[@]}" device disable victim --tenant t >/dev/null
disabled=$(date +%s.%N)
while allowed; do sleep 0.05; done
denied=$(date +%s.%N)
wait "$ipid"
done_at=$(date +%s.%N)
printf 'disabled %.2f s into the import; deny seen %.2f s after the disable; import done at %.2f s\n' \
  "$(echo "$disabled - $start" | bc -l)" "$(echo "$denied - $disabled" | bc -l)" \
  "$(echo "$done_at - $start" | bc -l)"
