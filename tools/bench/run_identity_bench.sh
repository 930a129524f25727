#!/usr/bin/env bash
# Compares an IdentityService server against the no-op baseline, same load generator,
# same concurrency, same transport, same requests:
#   1. starts tools/bench/noop_server on an ephemeral port, measures its peak (closed
#      loop), then p99 at half of that peak (fixed rate), and stops it;
#   2. does the same against the target: an address (--target=host:port) or a command
#      given after `--` (run by `bash -c`, so '$BENCH_TLS_CERT' etc. expand) that
#      must print `LISTENING <port>` on stdout;
#   3. prints both, the QPS ratio target/noop and each p99 at half of its own peak.
# Client and server are pinned to separate cores with taskset when available.
#
#   bazel build -c opt //tools/bench/...
#   tools/bench/run_identity_bench.sh [options] [-- target server command ...]
#
# Options (defaults in brackets):
#   --target=HOST:PORT   an already running target (not started, not pinned)
#   --mode=raw|sas|triple|x509 [raw]   --requests_file=F   --request_json=JSON
#   --channels=N [4]  --concurrency=M [64]  --warmup=D [3s]  --duration=D [10s]
#   --half_duration=D [10s]      duration of the fixed-rate runs at 50% of peak (the
#                         loadgen's --busy_poll sender: its "cli us" is a spinning core)
#   --tls                 TLS for both: a throw-away CA and server certificate are made
#                         for the no-op server; the target command sees them as
#                         $BENCH_TLS_CERT, $BENCH_TLS_KEY, $BENCH_TLS_CA
#   --target_tls_ca=F     CA of an external --target (default: the throw-away CA)
#   --authority=NAME      :authority / TLS name for the target [localhost with --tls]
#   --bearer_token=T      sent to both servers (the no-op server ignores it)
#   --client_cpus=LIST [0]  --server_cpus=LIST [1]   taskset CPU lists
#   --out_dir=DIR         keep the JSON results there (default: a temp dir, removed)
#   --loadgen_arg=ARG     extra flag for every loadgen run (repeatable)
#   --stall_check=SECONDS [5]  first spin tools/bench/machine_stalls on the client and
#                         server CPUs and report how often the machine took them away
#                         (the floor under any p99 measured here); 0 skips it
#   --wait_quiet=SECONDS [120]  before each run, wait (up to this long) until the
#                         machine is idle (< 10% of one CPU busy over 1 s); shared VMs
# Exit status: 0 when every run was clean; 3 if a run had gRPC errors or DENYs; 4 if
# other processes used the CPUs during a run (figures not meaningful).
set -euo pipefail

die() { echo "run_identity_bench: $*" >&2; exit 2; }

# Binaries: from `bazel run` runfiles, $BENCH_BIN_DIR, or the -c opt output tree.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin_dir="${BENCH_BIN_DIR:-}"
if [[ -z "$bin_dir" ]]; then
  for d in "${RUNFILES_DIR:-$0.runfiles}/iotauth/tools/bench" \
           "$here/../../bazel-out/k8-opt/bin/tools/bench" "$here/../../bazel-bin/tools/bench"; do
    if [[ -x "$d/iotauth_loadgen" && -x "$d/noop_server" ]]; then bin_dir="$d"; break; fi
  done
fi
[[ -n "$bin_dir" ]] || die "binaries not found: run 'bazel build -c opt //tools/bench/...' or set BENCH_BIN_DIR"
LOADGEN="$bin_dir/iotauth_loadgen"
NOOP="$bin_dir/noop_server"
# Under `bazel run`, relative paths given by the user refer to where they ran it.
[[ -n "${BUILD_WORKING_DIRECTORY:-}" ]] && cd "$BUILD_WORKING_DIRECTORY"

target="" mode="raw" requests_file="" request_json="" channels=4 concurrency=64
warmup=3s duration=10s half_duration=10s tls=0 target_tls_ca="" authority="" bearer=""
client_cpus=0 server_cpus=1 out_dir="" extra=() target_cmd=() wait_quiet=120 stall_check=5
while (($#)); do
  case "$1" in
    --target=*) target="${1#*=}" ;;
    --mode=*) mode="${1#*=}" ;;
    --requests_file=*) requests_file="$(realpath "${1#*=}")" ;;
    --request_json=*) request_json="${1#*=}" ;;
    --channels=*) channels="${1#*=}" ;;
    --concurrency=*) concurrency="${1#*=}" ;;
    --warmup=*) warmup="${1#*=}" ;;
    --duration=*) duration="${1#*=}" ;;
    --half_duration=*) half_duration="${1#*=}" ;;
    --tls) tls=1 ;;
    --target_tls_ca=*) target_tls_ca="${1#*=}" ;;
    --authority=*) authority="${1#*=}" ;;
    --bearer_token=*) bearer="${1#*=}" ;;
    --client_cpus=*) client_cpus="${1#*=}" ;;
    --server_cpus=*) server_cpus="${1#*=}" ;;
    --out_dir=*) out_dir="${1#*=}" ;;
    --loadgen_arg=*) extra+=("${1#*=}") ;;
    --wait_quiet=*) wait_quiet="${1#*=}" ;;
    --stall_check=*) stall_check="${1#*=}" ;;
    --) shift; target_cmd=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ -n "$target" || ${#target_cmd[@]} -gt 0 ]] || die "give --target=HOST:PORT or -- COMMAND"
[[ -n "$target" && ${#target_cmd[@]} -gt 0 ]] && die "give --target or a command, not both"

work="$(mktemp -d)"
keep_dir="$out_dir"
[[ -z "$out_dir" ]] && out_dir="$work"
mkdir -p "$out_dir"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Pinning: client and server on separate cores, when possible.
pin_client=() pin_server=()
cores="$(nproc)"
if command -v taskset >/dev/null && ((cores >= 2)); then
  pin_client=(taskset -c "$client_cpus")
  pin_server=(taskset -c "$server_cpus")
  pinning="client on CPU $client_cpus, server on CPU $server_cpus (taskset)"
else
  pinning="not pinned (taskset missing or < 2 cores): client and server share the CPUs"
fi

if ((tls)); then
  # Throw-away PKI: a CA and a localhost server certificate (EC P-256).
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=iotauth bench CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/san.ext"
  openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 1 -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null
  export BENCH_TLS_CERT="$work/server.pem" BENCH_TLS_KEY="$work/server.key" BENCH_TLS_CA="$work/ca.pem"
  [[ -z "$authority" ]] && authority=localhost
fi

# Starts a server (argv) pinned to the server CPUs; sets server_pid and server_port.
start_server() {
  local out="$work/server.$RANDOM.out"
  "${pin_server[@]}" "$@" >"$out" 2>"$out.err" &
  server_pid=$!
  for _ in $(seq 1 $(( ${BENCH_START_TIMEOUT_S:-20} * 10 ))); do
    server_port="$(awk '/^LISTENING /{print $2; exit}' "$out")"
    [[ -n "$server_port" ]] && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$out.err" >&2; die "server exited: $*"; }
    sleep 0.1
  done
  die "server printed no 'LISTENING <port>' within ${BENCH_START_TIMEOUT_S:-20} s: $*"
}
stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# Busy jiffies of all CPUs (everything but idle and iowait).
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
# Waits until other processes leave the CPUs alone (our idle server excepted).
wait_quiet() {
  local deadline=$((SECONDS + wait_quiet)) a b hz
  hz="$(getconf CLK_TCK)"
  while :; do
    a="$(busy_jiffies)"; sleep 1; b="$(busy_jiffies)"
    if (((b - a) * 10 < hz)); then return 0; fi
    if ((SECONDS >= deadline)); then
      echo "run_identity_bench: machine still busy ($((100 * (b - a) / hz))% of a CPU), running anyway" >&2
      return 0
    fi
    echo "run_identity_bench: waiting for a quiet machine ($((100 * (b - a) / hz))% of a CPU busy)" >&2
  done
}

status=0
# run_loadgen NAME ADDR PID CA [loadgen flags...]: writes $out_dir/NAME.json.
run_loadgen() {
  local name="$1" addr="$2" pid="$3" ca="$4"; shift 4
  local args=(--target="$addr" --mode="$mode" --channels="$channels" --concurrency="$concurrency"
              --warmup="$warmup" --json --label="$name")
  [[ -n "$requests_file" ]] && args+=(--requests_file="$requests_file")
  [[ -n "$request_json" ]] && args+=(--request_json="$request_json")
  [[ -n "$pid" ]] && args+=(--server_pid="$pid")
  if ((tls)); then args+=(--tls); [[ -n "$ca" ]] && args+=(--tls_ca="$ca"); fi
  [[ -n "$authority" ]] && args+=(--authority="$authority")
  [[ -n "$bearer" ]] && args+=(--bearer_token="$bearer")
  ((wait_quiet > 0)) && wait_quiet
  echo "== $name" >&2
  local rc=0
  "${pin_client[@]}" "$LOADGEN" "${args[@]}" "${extra[@]}" "$@" >"$out_dir/$name.json" || rc=$?
  ((rc == 0)) || { echo "run_identity_bench: $name: loadgen exit $rc" >&2; status=3; }
  ((rc == 0 || rc == 3)) || die "$name: loadgen failed"
}
half_rate() {  # 50% of the measured peak of a result file
  python3 -c 'import json,sys; print(max(1, round(json.load(open(sys.argv[1]))["qps"] / 2)))' "$1"
}
# Fixed-rate runs get room for queueing: cap in flight at 4x the closed-loop count.
half_cap=$((concurrency * 4))

# 0. How much the machine itself stalls the CPUs (both at once, idle otherwise).
if ((stall_check > 0)) && [[ -x "$bin_dir/machine_stalls" ]]; then
  ((wait_quiet > 0)) && wait_quiet
  echo "== machine stalls (${stall_check}s)" >&2
  "${pin_client[@]}" "$bin_dir/machine_stalls" --duration="${stall_check}s" --json >"$out_dir/stalls_client.json" &
  "${pin_server[@]}" "$bin_dir/machine_stalls" --duration="${stall_check}s" --json >"$out_dir/stalls_server.json"
  wait
fi

# 1. Baseline.
noop_args=("$NOOP" --port=0)
((tls)) && noop_args+=(--tls_cert="$BENCH_TLS_CERT" --tls_key="$BENCH_TLS_KEY")
start_server "${noop_args[@]}"
noop_addr="127.0.0.1:$server_port"
ca="${BENCH_TLS_CA:-}"
run_loadgen noop_peak "$noop_addr" "$server_pid" "$ca" --duration="$duration"
run_loadgen noop_half "$noop_addr" "$server_pid" "$ca" --duration="$half_duration" \
  --rate="$(half_rate "$out_dir/noop_peak.json")" --concurrency="$half_cap"
stop_server

# 2. Target.
tpid=""
if ((${#target_cmd[@]})); then
  # Through bash, so that the command may use $BENCH_TLS_* (quote them for the
  # outer shell); `exec` keeps the server's pid for its CPU accounting.
  start_server bash -c "exec ${target_cmd[*]}"
  target_addr="127.0.0.1:$server_port"
  tpid="$server_pid"
else
  target_addr="$target"
  [[ -n "$target_tls_ca" ]] && ca="$target_tls_ca"
fi
run_loadgen target_peak "$target_addr" "$tpid" "$ca" --duration="$duration"
# Same server process: start after the requests the peak run used (device-triple
# requests are single-use; a replay would be denied).
sent="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("requests_sent", 0))' \
  "$out_dir/target_peak.json")"
run_loadgen target_half "$target_addr" "$tpid" "$ca" --duration="$half_duration" \
  --rate="$(half_rate "$out_dir/target_peak.json")" --concurrency="$half_cap" \
  --start_request="$sent"
[[ -n "$tpid" ]] && stop_server

# 3. Report.
target_desc="${target:-${target_cmd[*]}}"
report_rc=0
python3 - "$out_dir" "$pinning" "$target_desc" "$keep_dir" <<'EOF' || report_rc=$?
import json, os, platform, sys
d, pinning, target_desc, keep = sys.argv[1:5]
r = {n: json.load(open(os.path.join(d, n + ".json")))
     for n in ("noop_peak", "noop_half", "target_peak", "target_half")}
p = r["noop_peak"]
print("setup: %d CPUs, %s; %s, %s API, %d channels, %d in flight (closed loop), "
      "mode %s, %d request(s) of ~%d bytes; %gs per run after %gs warm-up" % (
      os.cpu_count(), pinning, p["transport"], p["api"], p["channels"], p["concurrency"],
      p["mode"], p["requests"], p["request_bytes"], p["duration_s"], p["warmup_s"]))
print("target: " + target_desc)
def cpu(x, k):
    return "%.1f" % x[k] if k in x else "-"
hdr = "%-12s %9s %8s %8s %8s %9s %9s %8s %8s %8s %11s" % (
    "run", "qps", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us", "errors", "deny",
    "cli us", "srv us/call")
print(hdr)
for n in ("noop_peak", "noop_half", "target_peak", "target_half"):
    x = r[n]; l = x["latency_us"]
    name = n if x["load"] == "closed_loop" else "%s@%d" % (n, x["target_rate"])
    flags = []
    if x.get("client_bound"): flags.append("client-bound")
    if x.get("rate_kept") is False: flags.append("rate NOT kept")
    if x.get("machine_busy"): flags.append("BUSY machine (other %.2f cores)" % x["other_cpu_cores"])
    print("%-12s %9.0f %8.0f %8.0f %8.0f %9.0f %9.0f %8d %8d %8s %11s %s" % (
        n, x["qps"], l["p50"], l["p90"], l["p99"], l["p999"], l["max"], x["errors"], x["deny"],
        cpu(x, "client_cpu_us_per_call"), cpu(x, "server_cpu_us_per_call"), " ".join(flags)))
ratio = r["target_peak"]["qps"] / r["noop_peak"]["qps"] if r["noop_peak"]["qps"] else 0
print("QPS ratio target/noop: %.3f (%.0f / %.0f)" % (ratio, r["target_peak"]["qps"], r["noop_peak"]["qps"]))
for n in ("noop", "target"):
    h = r[n + "_half"]
    spin = (", client busy %.2f of its spinning core" % h["client_busy_fraction"]
            if "client_busy_fraction" in h else "")
    print("p99 at half of peak, %-6s: %.0f us at %.0f/s (p50 %.0f us, send lag p99 %.0f us%s)" % (
        n, h["latency_us"]["p99"], h["target_rate"], h["latency_us"]["p50"], h["send_lag_us"]["p99"],
        spin))
for side in ("client", "server"):
    f = os.path.join(d, "stalls_%s.json" % side)
    if os.path.exists(f):
        m = json.load(open(f))
        print("machine, idle: %s CPU %d stalled %d times > 1 ms in %.0fs (%d > 100 us, longest %.1f ms)" % (
            side, m["cpu"], m["stalls_over_1ms"], m["seconds"], m["stalls_over_100us"],
            m["max_stall_us"] / 1000))
busy = [n for n, x in r.items() if x.get("machine_busy")]
if busy:
    print("NOT MEANINGFUL: other processes used the CPUs during " + ", ".join(busy) +
          " (other_cpu_cores in the JSON); rerun on a quiet machine")
bad = [n for n, x in r.items() if x["errors"] or x["deny"]]
if bad:
    print("INVALID runs (gRPC errors or DENY answers): " + ", ".join(bad))
if keep:
    print("results: " + d)
sys.exit(4 if busy else 0)
EOF
[[ -z "$keep_dir" ]] && echo "(pass --out_dir=DIR to keep the JSON)"
((report_rc == 0)) || status="$report_rc"
exit "$status"
