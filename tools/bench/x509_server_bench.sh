#!/usr/bin/env bash
# X.509 Authenticate on the real all-in-one server against its two baselines, in one
# invocation (issue: X.509 client certificates, performance):
#
#   tools/bench/x509_server_bench.sh [--devices=N] [--key=ec|rsa] [--keep] [run_identity_bench.sh flags]
#   (--keep leaves the work directory: PKI, data directory, requests, JSON results)
#
# 1. builds iotauthd, iotauthctl and the bench tools with -c opt;
# 2. makes a tenant PKI with the openssl CLI: root CA -> intermediate CA -> N device
#    leaves (EC P-256 by default; --key=rsa for RSA-2048), clientAuth EKU;
# 3. starts iotauthd once (plaintext, caller auth off, as the no-op baseline), uploads
#    the root, proves possession of its key (`ca verification-code` + a proof
#    certificate + `ca verify`), imports the N devices, and stops it;
# 4. writes one request per device: an MQTT CONNECT whose peer_certificate_chain is
#    [leaf PEM, intermediate PEM], as a broker forwards it after the TLS handshake;
# 5. WARM: run_identity_bench.sh, no-op server vs iotauthd with its caches (default):
#    QPS ratio (floor: 0.80);
# 6. COLD: the same with both X.509 caches off
#    (identity.x509_parsed_cache_size=0, identity.x509_result_cache_size=0), so every
#    call parses the chain and runs X509_verify_cert; then openssl_chain_baseline on
#    the server's core times raw OpenSSL (parse + X509_verify_cert) on the same chains.
#    Ratio: iotauthd server CPU per call / (OpenSSL us per chain + no-op server CPU
#    per call) (ceiling: 1.3).
# Extra iotauthd flags for both runs: IOTAUTHD_FLAGS (e.g. "--set=services=identity,registry"
# to leave the audit log out).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
devices=200
key=ec
keep=0
pass=()
for a in "$@"; do
  case "$a" in
    --devices=*) devices="${a#*=}" ;;
    --key=*) key="${a#*=}" ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) pass+=("$a") ;;
  esac
done
case "$key" in
  ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa) newkey=(-newkey rsa:2048) ;;
  *) echo "--key must be ec or rsa" >&2; exit 2 ;;
esac
bazel build -c opt //services/server:iotauthd //clients/iotauthctl //tools/bench:all >&2
B="$ROOT/bazel-out/k8-opt/bin"
work="$(mktemp -d /tmp/iotauth-x509-bench.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; [[ $keep == 1 ]] || rm -rf "$work"' EXIT
pki="$work/pki"; mkdir -p "$pki"
data="$work/data"
COMMON=(--data_dir="$data" --set=grpc.address=127.0.0.1:0 --set=metrics.address=
        --set=grpc.tls.mode=insecure --set=auth.disabled=true --set=log.level=warn)
read -r -a EXTRA <<<"${IOTAUTHD_FLAGS:-}"
ossl() { openssl "$@" 2>>"$work/openssl.log"; }

echo "==> test PKI: root -> intermediate -> $devices $key leaves (openssl CLI)" >&2
cat >"$pki/ca.ext" <<'X'
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
X
cat >"$pki/leaf.ext" <<'X'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
X
ossl req -x509 "${newkey[@]}" -nodes -keyout "$pki/root.key" -out "$pki/root.pem" -days 30 \
  -subj "/CN=bench root" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign"
ossl req -new "${newkey[@]}" -nodes -keyout "$pki/inter.key" -out "$pki/inter.csr" -subj "/CN=bench intermediate"
ossl x509 -req -in "$pki/inter.csr" -CA "$pki/root.pem" -CAkey "$pki/root.key" -CAcreateserial \
  -days 30 -extfile "$pki/ca.ext" -out "$pki/inter.pem"
echo "device_id,product_key,status,ca_signed_allowed" >"$work/devices.csv"
for i in $(seq 0 $((devices - 1))); do
  d=$(printf "x509-%05d" "$i")
  ossl req -new "${newkey[@]}" -nodes -keyout "$pki/$d.key" -out "$pki/$d.csr" -subj "/CN=$d"
  ossl x509 -req -in "$pki/$d.csr" -CA "$pki/inter.pem" -CAkey "$pki/inter.key" -CAcreateserial \
    -days 7 -extfile "$pki/leaf.ext" -out "$pki/$d.pem"
  echo "$d,pk-x509,enabled,true" >>"$work/devices.csv"
  (( (i + 1) % 50 == 0 )) && echo "    $((i + 1))/$devices leaves" >&2
done
/usr/bin/python3 - "$pki" "$devices" "$work/requests.jsonl" <<'PY'
import base64, json, sys
pki, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
inter = open(pki + "/inter.pem", "rb").read()
with open(out, "w") as f:
    for i in range(n):
        d = "x509-%05d" % i
        leaf = open("%s/%s.pem" % (pki, d), "rb").read()
        f.write(json.dumps({"connect": {"client_id": d, "username": d, "peer_certificate_chain": [
            base64.b64encode(leaf).decode(), base64.b64encode(inter).decode()]}}) + "\n")
PY

echo "==> registering the root CA (proof of possession) and $devices devices" >&2
"$B/services/server/iotauthd" "${COMMON[@]}" --announce_port >"$work/setup.out" 2>"$work/setup.err" &
spid=$!
for _ in $(seq 1 300); do port="$(awk '/^LISTENING /{print $2; exit}' "$work/setup.out")"; [[ -n "$port" ]] && break; sleep 0.1; done
[[ -n "${port:-}" ]] || { cat "$work/setup.err" >&2; exit 1; }
CTL=("$B/clients/iotauthctl/iotauthctl" --insecure --address "127.0.0.1:$port")
"${CTL[@]}" tenant create bench --hub_host bench.example.net >/dev/null
"${CTL[@]}" product create pk-x509 --tenant bench --credential_types x509_ca >/dev/null
ca_id="$("${CTL[@]}" --json ca upload --tenant bench --file "$pki/root.pem" |
         /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
code="$("${CTL[@]}" ca verification-code --tenant bench "$ca_id" | tr -d '[:space:]')"
ossl req -new "${newkey[@]}" -nodes -keyout "$pki/proof.key" -out "$pki/proof.csr" -subj "/CN=$code"
ossl x509 -req -in "$pki/proof.csr" -CA "$pki/root.pem" -CAkey "$pki/root.key" -CAcreateserial \
  -days 1 -out "$pki/proof.pem"
"${CTL[@]}" ca verify --tenant bench "$ca_id" --file "$pki/proof.pem" >/dev/null
"${CTL[@]}" device import --tenant bench --file "$work/devices.csv" --no_progress >&2
kill -TERM $spid; wait $spid || true

run() {  # run NAME [iotauthd flags...]: no-op vs iotauthd, JSON kept in $work/NAME
  local name="$1"; shift
  echo "==> $name: no-op baseline vs iotauthd $*" >&2
  local rc=0
  BENCH_START_TIMEOUT_S=120 tools/bench/run_identity_bench.sh --mode=x509 \
    --requests_file="$work/requests.jsonl" --half_duration=3s --out_dir="$work/$name" "${pass[@]}" -- \
    "$B/services/server/iotauthd" "${COMMON[@]}" "${EXTRA[@]}" "$@" --announce_port || rc=$?
  [[ $rc -eq 0 || $rc -eq 4 ]] || exit $rc
}
run warm
run cold --set=identity.x509_parsed_cache_size=0 --set=identity.x509_result_cache_size=0

echo "==> raw OpenSSL on the server's core: parse + X509_verify_cert of the same chains" >&2
taskset -c 1 "$B/tools/bench/openssl_chain_baseline" --ca="$pki/root.pem" \
  --requests_file="$work/requests.jsonl" --duration=5s --json >"$work/openssl.json"

/usr/bin/python3 - "$work" <<'PY'
import json, os, sys
w = sys.argv[1]
j = lambda *p: json.load(open(os.path.join(w, *p)))
warm_n, warm_t = j("warm", "noop_peak.json"), j("warm", "target_peak.json")
cold_n, cold_t = j("cold", "noop_peak.json"), j("cold", "target_peak.json")
o = j("openssl.json")
print("\nX.509 Authenticate, chain [leaf, intermediate] against a registered root")
print("%-28s %10s %12s %18s" % ("run", "QPS", "p99 (us)", "server CPU/call"))
for name, r in (("warm no-op", warm_n), ("warm iotauthd", warm_t), ("cold no-op", cold_n), ("cold iotauthd", cold_t)):
    print("%-28s %10.0f %12.0f %15.1f us" % (name, r["qps"], r["latency_us"]["p99"], r.get("server_cpu_us_per_call") or 0))
print("raw OpenSSL parse + verify: %.1f us CPU per chain (%d distinct chains)" % (o["cpu_us_per_chain"], o["distinct"]))
warm_ratio = warm_t["qps"] / warm_n["qps"]
base = o["cpu_us_per_chain"] + cold_n["server_cpu_us_per_call"]
cold_ratio = cold_t["server_cpu_us_per_call"] / base
print("WARM: QPS ratio iotauthd/no-op = %.2f (floor 0.80)" % warm_ratio)
print("COLD: server CPU per call %.1f us vs OpenSSL %.1f + no-op RPC %.1f = %.1f us: ratio %.2f (ceiling 1.30)"
      % (cold_t["server_cpu_us_per_call"], o["cpu_us_per_chain"], cold_n["server_cpu_us_per_call"], base, cold_ratio))
json.dump({"warm_qps_ratio": warm_ratio, "cold_cpu_ratio": cold_ratio, "openssl_cpu_us_per_chain": o["cpu_us_per_chain"],
           "warm": {"noop": warm_n, "target": warm_t}, "cold": {"noop": cold_n, "target": cold_t}},
          open(os.path.join(w, "..", os.path.basename(w) + ".json"), "w"))
print("(JSON: %s.json)" % w)
PY
