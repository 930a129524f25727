# Sourced by the *_server_bench.sh scripts: the iotauthd they benchmark, with the
# settings the no-op baseline shares (plaintext, caller auth off, no metrics listener).
# Needs $B (bazel-out/k8-opt/bin) and $work; sets COMMON and AUDIT_OFF; wait_listening waits for a
# server's port, start_server starts one pinned and waits for it,
# registry_copy_args gives a server its own copy of the set-up registry, and
# start_setup_server sets spid, port and CTL (an iotauthctl command line for that server);
# make_bench_requests and import_bench_devices set up the SAS / device-triple data.

COMMON=(--data_dir="$work/data" --set=grpc.address=127.0.0.1:0 --set=metrics.address=
        --set=grpc.tls.mode=insecure --set=auth.disabled=true --set=log.level=warn)
# Added to COMMON for the iotauthd measured without its audit log.
AUDIT_OFF=(--set=services=identity,registry --set=audit.disabled=true)

# wait_listening OUT PID [TIMEOUT_S (30)]: prints the port from the `LISTENING <port>`
# line a server (iotauthd --announce_port, noop_server) writes to OUT; fails when PID
# exits first or after TIMEOUT_S seconds.
wait_listening() {
  local out="$1" pid="$2" p=""
  for _ in $(seq 1 $(( ${3:-30} * 10 ))); do
    p="$(awk '/^LISTENING /{print $2; exit}' "$out")"
    [[ -n "$p" ]] && { echo "$p"; return 0; }
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# start_server OUT TIMEOUT_S CPUS COMMAND...: runs COMMAND (which announces
# `LISTENING <port>`) on CPUS (taskset), stdout to OUT and stderr to OUT.err; sets
# started_pid and started_port. Exits with COMMAND's log when it has not announced
# its port after TIMEOUT_S seconds, or has exited.
start_server() {
  local out="$1" timeout="$2" cpus="$3"
  shift 3
  taskset -c "$cpus" "$@" >"$out" 2>"$out.err" &
  started_pid=$!
  started_port="$(wait_listening "$out" "$started_pid" "$timeout")" ||
    { cat "$out.err" >&2; echo "did not start: $*" >&2; exit 1; }
}

# registry_copy_args DIR [FLAG_PREFIX...]: copies the set-up registry (registry.db,
# master.key) into DIR, so that each server benchmarked side by side has its own
# registry and audit log, and sets ARGS to COMMON with DIR as the data dir, less the
# flags that start with a FLAG_PREFIX (for the caller to set its own).
registry_copy_args() {
  local dir="$1" c p keep
  shift
  mkdir -p "$dir"
  cp "$work/data/registry.db" "$work/data/master.key" "$dir/"
  ARGS=(--data_dir="$dir")
  for c in "${COMMON[@]}"; do
    keep=1
    for p in --data_dir= "$@"; do [[ $c == "$p"* ]] && keep=0; done
    ((keep)) && ARGS+=("$c")
  done
  return 0
}

# Starts iotauthd for data set-up; stop it with `stop_setup_server`.
start_setup_server() {
  "$B/services/server/iotauthd" "${COMMON[@]}" --announce_port >"$work/setup.out" 2>"$work/setup.err" &
  spid=$!
  port="$(wait_listening "$work/setup.out" "$spid" 600)" ||
    { echo "iotauthd did not start:" >&2; cat "$work/setup.err" >&2; exit 1; }
  CTL=("$B/clients/iotauthctl/iotauthctl" --insecure --address "127.0.0.1:$port")
}

stop_setup_server() {
  kill -TERM "$spid"
  wait "$spid" || true
}

# make_bench_requests DEVICES MODE TRIPLE_REQUESTS REQUEST_DEVICES: writes
# $work/devices.csv (DEVICES devices of product pk-bench, each with its own random
# key) and $work/requests.jsonl: one request per device for MODE=sas, or
# TRIPLE_REQUESTS single-use device-triple requests for MODE=triple, cycling over the
# first REQUEST_DEVICES devices. Computed here in Python, not by project code.
make_bench_requests() {
  echo "==> generating $1 devices and their $2 requests" >&2
  /usr/bin/python3 - "$work" "$@" <<'PY'
import base64, hashlib, hmac, json, os, sys, time, urllib.parse
work, n, mode, triple_requests = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
m = min(n, int(sys.argv[5]))  # requests cycle over the first m devices
hub, pk = "bench.example.net", "pk-bench"
se = int(time.time()) + 24 * 3600
ts = int(time.time() * 1000)
with open(os.path.join(work, "devices.csv"), "w") as dev, open(os.path.join(work, "requests.jsonl"), "w") as req:
    dev.write("device_id,product_key,status,primary_key,secondary_key\n")
    keys = []
    for i in range(n):
        d = "bench-%07d" % i
        key = base64.b64encode(os.urandom(32)).decode()
        dev.write("%s,%s,enabled,%s,%s\n" % (d, pk, key, key))
        if mode == "triple":
            keys.append(key)
            continue  # written below
        if i >= m:
            continue
        if mode == "sas":
            sr = urllib.parse.quote("%s/devices/%s" % (hub, d), safe="")
            sig = base64.b64encode(hmac.new(base64.b64decode(key), ("%s\n%d" % (sr, se)).encode(),
                                            hashlib.sha256).digest()).decode()
            tok = "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, urllib.parse.quote(sig, safe=""), se)
            r = {"connect": {"client_id": d, "username": "%s/%s/?api-version=2021-04-12" % (hub, d),
                             "password": base64.b64encode(tok.encode()).decode()}}
        req.write(json.dumps(r) + "\n")
    # Device triples: a replay is refused, so every request is single-use. Enough for
    # both runs against iotauthd (peak, then half of it from where the peak stopped:
    # run_identity_bench passes --start_request), each with its own timestamp.
    for i in range(triple_requests if mode == "triple" else 0):
        # The k-th request of a device is stamped ts + 250 s + k ms: the default
        # 300 s window then accepts it from 50 s before this script started until
        # 9 minutes after, which covers both configurations' runs.
        d, key, t = "bench-%07d" % (i % m), keys[i % m], ts + 250000 + i // m
        content = "clientId%sdeviceName%sproductKey%stimestamp%d" % (d, d, pk, t)
        pw = hmac.new(key.encode(), content.encode(), hashlib.sha256).hexdigest()
        r = {"connect": {"client_id": "%s|securemode=2,signmethod=hmacsha256,timestamp=%d|" % (d, t),
                         "username": "%s&%s" % (d, pk), "password": base64.b64encode(pw.encode()).decode()}}
        req.write(json.dumps(r) + "\n")
PY
}

# import_bench_devices: tenant "bench" (hub bench.example.net), product "pk-bench"
# (SAS and device triples), and $work/devices.csv through the streaming ImportDevices
# RPC, into the server start_setup_server started; sets start and end (date +%s.%N)
# around the import.
import_bench_devices() {
  echo "==> importing $(($(wc -l <"$work/devices.csv") - 1)) devices through ImportDevices (streaming RPC)" >&2
  "${CTL[@]}" tenant create bench --hub_host bench.example.net >/dev/null
  "${CTL[@]}" product create pk-bench --tenant bench --credential_types sas,device_triple >/dev/null
  start=$(date +%s.%N)
  "${CTL[@]}" device import --tenant bench --file "$work/devices.csv" --no_progress
  end=$(date +%s.%N)
}
