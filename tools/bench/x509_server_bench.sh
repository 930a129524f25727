#!/usr/bin/env bash
# X.509 Authenticate on the real all-in-one server against its two baselines, in one
# invocation (issue: X.509 client certificates, performance):
#
#   tools/bench/x509_server_bench.sh [--devices=N] [--key=ec|rsa] [--keep] [run_identity_bench.sh flags]
#   (--keep leaves the work directory: PKI, data directory, requests, JSON results)
#
# 1. builds iotauthd, iotauthctl and the bench tools with -c opt;
# 2. makes a tenant PKI: root CA -> intermediate CA (openssl CLI) -> N device leaves
#    (python3-cryptography; EC P-256 by default, --key=rsa for RSA-2048), clientAuth EKU;
# 3. starts iotauthd once (plaintext, caller auth off, as the no-op baseline), uploads
#    the root, proves possession of its key (`ca verification-code` + a proof
#    certificate + `ca verify`), imports the N devices, and stops it;
# 4. writes one request per device: an MQTT CONNECT whose peer_certificate_chain is
#    [leaf PEM, intermediate PEM], as a broker forwards it after the TLS handshake
#    (warm.jsonl: the first 1000 devices; cold.jsonl: all N);
# 5. runs run_identity_bench.sh (no-op server vs iotauthd, same generator) three times:
#    WARM    warm.jsonl, default caches: chain outcomes cached -> QPS ratio (floor 0.80);
#    COLD    cold.jsonl, default caches: every call presents a leaf never seen before
#            (result-cache miss, leaf parsed, X509_verify_cert); the shared
#            intermediate's parse is cached, as in any real fleet;
#    NOCACHE warm.jsonl with identity.x509_parsed_cache_size=0 and
#            identity.x509_result_cache_size=0: both certificates parsed and the chain
#            verified on every call;
# 6. times raw OpenSSL on the server's core (openssl_chain_baseline: parse both
#    certificates + X509_verify_cert with iotauth's flags) on the same chains, and
#    prints server CPU per call / (OpenSSL us per chain + no-op server CPU per call)
#    for COLD and NOCACHE (ceiling: 1.3).
# --devices (60000) must exceed the cold calls (~QPS x 19 s), or chains repeat (warned).
# Extra iotauthd flags for both runs: IOTAUTHD_FLAGS (e.g. "--set=services=identity,registry --set=audit.disabled=true"
# to leave the audit log out).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
devices=60000
warm_devices=1000
key=ec
keep=0
pass=()
for a in "$@"; do
  case "$a" in
    --devices=*) devices="${a#*=}" ;;
    --key=*) key="${a#*=}" ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
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
source "$ROOT/tools/bench/bench_server.sh"
read -r -a EXTRA <<<"${IOTAUTHD_FLAGS:-}"
ossl() { openssl "$@" 2>>"$work/openssl.log"; }

echo "==> test PKI: root -> intermediate (openssl CLI), $devices $key device leaves" >&2
cat >"$pki/ca.ext" <<'X'
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
X
ossl req -x509 "${newkey[@]}" -nodes -keyout "$pki/root.key" -out "$pki/root.pem" -days 30 \
  -subj "/CN=bench root" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign"
ossl req -new "${newkey[@]}" -nodes -keyout "$pki/inter.key" -out "$pki/inter.csr" -subj "/CN=bench intermediate"
ossl x509 -req -in "$pki/inter.csr" -CA "$pki/root.pem" -CAkey "$pki/root.key" -CAcreateserial \
  -days 30 -extfile "$pki/ca.ext" -out "$pki/inter.pem"
# Device leaves: python3-cryptography (Debian), fast enough for tens of thousands.
/usr/bin/python3 - "$pki" "$devices" "$key" "$work" "$warm_devices" <<'PY' >&2
import base64, datetime, json, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
pki, n, kind, work, warm_n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
inter_pem = open(pki + "/inter.pem", "rb").read()
inter = x509.load_pem_x509_certificate(inter_pem)
inter_key = serialization.load_pem_private_key(open(pki + "/inter.key", "rb").read(), None)
ski = inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
now = datetime.datetime.utcnow()
with open(work + "/devices.csv", "w") as dev, open(work + "/cold.jsonl", "w") as cold, \
        open(work + "/warm.jsonl", "w") as warm:
    dev.write("device_id,product_key,status,ca_signed_allowed\n")
    for i in range(n):
        d = "x509-%06d" % i
        k = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, d)]))
                .issuer_name(inter.subject).public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=7))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
                .sign(inter_key, hashes.SHA256()))
        leaf = cert.public_bytes(serialization.Encoding.PEM)
        dev.write("%s,pk-x509,enabled,true\n" % d)
        line = json.dumps({"connect": {"client_id": d, "username": d, "peer_certificate_chain": [
            base64.b64encode(leaf).decode(), base64.b64encode(inter_pem).decode()]}}) + "\n"
        cold.write(line)
        if i < warm_n:
            warm.write(line)
        if (i + 1) % 5000 == 0 or i + 1 == n:
            print("    %d/%d leaves" % (i + 1, n), flush=True)
PY

echo "==> registering the root CA (proof of possession) and $devices devices" >&2
start_setup_server
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
stop_setup_server

run() {  # run NAME REQUESTS [iotauthd flags...]: no-op vs iotauthd, JSON kept in $work/NAME
  local name="$1" requests="$2"; shift 2
  echo "==> $name: no-op baseline vs iotauthd $*" >&2
  local rc=0
  BENCH_START_TIMEOUT_S=120 tools/bench/run_identity_bench.sh --mode=x509 \
    --requests_file="$requests" --half_duration=3s --out_dir="$work/$name" "${pass[@]}" -- \
    "$B/services/server/iotauthd" "${COMMON[@]}" "${EXTRA[@]}" "$@" --announce_port || rc=$?
  [[ $rc -eq 0 || $rc -eq 4 ]] || exit $rc
}
run warm "$work/warm.jsonl"
run cold "$work/cold.jsonl"
run nocache "$work/warm.jsonl" --set=identity.x509_parsed_cache_size=0 \
  --set=identity.x509_result_cache_size=0

echo "==> raw OpenSSL on the server's core: parse + X509_verify_cert of the same chains" >&2
taskset -c 1 "$B/tools/bench/openssl_chain_baseline" --ca="$pki/root.pem" \
  --requests_file="$work/warm.jsonl" --duration=5s --json >"$work/openssl.json"

/usr/bin/python3 - "$work" "$devices" <<'PY'
import json, os, sys
w, devices = sys.argv[1], int(sys.argv[2])
j = lambda *p: json.load(open(os.path.join(w, *p)))
runs = {n: (j(n, "noop_peak.json"), j(n, "target_peak.json")) for n in ("warm", "cold", "nocache")}
o = j("openssl.json")
print("\nX.509 Authenticate: chain [leaf PEM, intermediate PEM] against a registered root")
print("%-26s %9s %9s %10s %16s" % ("run", "QPS", "p50 us", "p99 us", "server CPU/call"))
for name, (n, t) in runs.items():
    for who, r in (("no-op", n), ("iotauthd", t)):
        print("%-26s %9.0f %9.0f %10.0f %13.1f us" % (name + " " + who, r["qps"], r["latency_us"]["p50"],
              r["latency_us"]["p99"], r.get("server_cpu_us_per_call") or 0))
print("raw OpenSSL parse (both certificates) + X509_verify_cert: %.1f us CPU per chain" % o["cpu_us_per_chain"])
out = {"openssl_cpu_us_per_chain": o["cpu_us_per_chain"]}
n, t = runs["warm"]
out["warm_qps_ratio"] = t["qps"] / n["qps"]
print("WARM    (result cache hits): QPS iotauthd/no-op = %.2f (floor 0.80)" % out["warm_qps_ratio"])
for name, what in (("cold", "new leaf every call, intermediate parse cached"),
                   ("nocache", "both caches off: parse both + verify every call")):
    n, t = runs[name]
    base = o["cpu_us_per_chain"] + n["server_cpu_us_per_call"]
    out[name + "_cpu_ratio"] = t["server_cpu_us_per_call"] / base
    print("%-7s (%s): %.1f us vs OpenSSL %.1f + no-op RPC %.1f = %.1f us -> %.2f (ceiling 1.30)"
          % (name.upper(), what, t["server_cpu_us_per_call"], o["cpu_us_per_chain"],
             n["server_cpu_us_per_call"], base, out[name + "_cpu_ratio"]))
# Every cold call must present a chain iotauthd has not seen: warn if the file wrapped.
used = 0
for f in ("target_peak.json", "target_half.json"):
    r = j("cold", f)
    used += r["completed_qps"] * (r["warmup_s"] + r["elapsed_s"])
print("cold chains presented: ~%d of %d distinct" % (used, devices))
if used > devices:
    print("WARNING: ~%d cold calls for %d distinct chains: some repeated (raise --devices)" % (used, devices))
out.update({k: {"noop": v[0], "target": v[1]} for k, v in runs.items()})
json.dump(out, open(w + ".json", "w"))
print("(JSON: %s.json)" % w)
PY
