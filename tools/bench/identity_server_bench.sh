#!/usr/bin/env bash
# Authenticate throughput and latency of the real all-in-one server against the
# no-op gRPC baseline, in one invocation (issue: identity hot path).
#
#   tools/bench/identity_server_bench.sh [--devices=N] [--mode=sas|triple]
#       [--request_devices=M (100000)] [--triple_requests=R (2500000)]
#       [--audit_backend=log|sqlite (log)] [--rounds=N (5)] [--round_duration=D (5s)]
#       [--cost_rounds=N (3)] [--cost_rate=QPS (10000)] [--cost_duration=D (10s)]
#       [--half_rounds=N (5)] [--half_duration=D (10s)]
#       [run_identity_bench.sh flags]
#
# 1. builds iotauthd, iotauthctl and the bench tools with -c opt;
# 2. starts iotauthd once (plaintext, caller auth off: the no-op baseline has
#    neither), imports N devices, each with its own random key, through the
#    streaming ImportDevices RPC, and stops it;
# 3. writes one request per device (SAS tokens; device-triple signatures are
#    single-use, so --mode=triple writes --triple_requests (2.5 M) of them, cycling
#    over the devices with a fresh timestamp each time; requests cycle over the first
#    --request_devices of the N registered devices,
#    computed here in Python, not by project code);
# 4. runs tools/bench/run_identity_bench.sh: the no-op server, then iotauthd on
#    the same data, same generator, concurrency and transport; prints the QPS
#    ratio and p99 at half of each one's peak; adds RSS per device;
# 5. repeats 4 with the audit log off and prints audit on / audit off;
# 6. interleaved rounds (--rounds=N, default 5; 0 skips): the no-op server,
#    iotauthd with the audit log and iotauthd without it run side by side (each on
#    the server CPU, idle while another is measured) and take turns under the same
#    closed-loop load, --round_duration each (5s), in an order that rotates each
#    round. Run-to-run drift on this machine
#    (~12%, see /work/shared/notes/performance.md) then hits all three alike; the
#    report gives each round's ratios and their median and range;
#    Then the audit's cost (--cost_rounds=N, default 3; 0 skips): iotauthd with and
#    without the audit log loaded at the same time, each at a fixed --cost_rate
#    (10000/s) for --cost_duration (10s), and their server CPU per call compared.
#    Both see the same machine at the same moment, so the difference (what the audit
#    costs per call) holds still to ~0.1 us where peak QPS swings by 10%;
#    Then p99 at half of peak, interleaved (--half_rounds=N, default 5; 0 skips): each
#    server in turn at a fixed rate of half its median peak from the rounds above,
#    --half_duration each (10s). One 10 s window's p99 is one sample of how often the
#    VM stalled in it (see machine_stalls): the rounds give each server's p99 over
#    the same stretch of time, their median, and how many rounds were under 1 ms;
# 7. times audit queries by device over the log the runs wrote.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
devices=100000
mode=sas
triple_requests=2500000
request_devices=100000
audit_backend=log
rounds=5
round_duration=5s
cost_rounds=3
cost_rate=10000
cost_duration=10s
half_rounds=5
half_duration=10s
client_cpus=0 server_cpus=1 channels=4 concurrency=64
pass=()
for a in "$@"; do
  case "$a" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --devices=*) devices="${a#*=}" ;;
    --mode=*) mode="${a#*=}" ;;
    --triple_requests=*) triple_requests="${a#*=}" ;;
    --request_devices=*) request_devices="${a#*=}" ;;
    --audit_backend=*) audit_backend="${a#*=}" ;;
    --rounds=*) rounds="${a#*=}" ;;
    --round_duration=*) round_duration="${a#*=}" ;;
    --cost_rounds=*) cost_rounds="${a#*=}" ;;
    --cost_rate=*) cost_rate="${a#*=}" ;;
    --cost_duration=*) cost_duration="${a#*=}" ;;
    --half_rounds=*) half_rounds="${a#*=}" ;;
    # Seen here for the interleaved half-peak rounds, and passed on.
    --half_duration=*) half_duration="${a#*=}"; pass+=("$a") ;;
    # Seen here for the interleaved rounds, and passed on.
    --client_cpus=*) client_cpus="${a#*=}"; pass+=("$a") ;;
    --server_cpus=*) server_cpus="${a#*=}"; pass+=("$a") ;;
    --channels=*) channels="${a#*=}"; pass+=("$a") ;;
    --concurrency=*) concurrency="${a#*=}"; pass+=("$a") ;;
    *) pass+=("$a") ;;
  esac
done
bazel build -c opt //services/server:iotauthd //clients/iotauthctl //tools/bench:all //proto:iotauth_descriptors >&2
B="$ROOT/bazel-out/k8-opt/bin"
work="$(mktemp -d /tmp/iotauth-bench.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
source "$ROOT/tools/bench/bench_server.sh"
COMMON+=(--set=storage.audit_backend="$audit_backend")

make_bench_requests "$devices" "$mode" "$triple_requests" "$request_devices"
start_setup_server
import_bench_devices
rss_kb=$(awk '/VmHWM/{print $2}' /proc/$spid/status)
echo "==> GetDevice latency (2000 sequential calls from Debian's python3-grpcio, one channel)" >&2
PYTHONPATH="$ROOT/tests/e2e" /usr/bin/python3 - "$port" "$devices" <<'PY' >&2
import random, sys, time
import grpc
import iotauth_harness as h
port, n = int(sys.argv[1]), int(sys.argv[2])
ch = grpc.insecure_channel("127.0.0.1:%d" % port)
lat = []
for i in range(2200):
    d = "bench-%07d" % random.randrange(n)
    t = time.perf_counter()
    h.call(ch, "iotauth.registry.v1.DeviceRegistry/GetDevice", {"tenant_id": "bench", "device_id": d})
    if i >= 200:
        lat.append((time.perf_counter() - t) * 1e6)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))]
print("GetDevice over %d devices: p50 %.0f us, p90 %.0f us, p99 %.0f us, p99.9 %.0f us (client: python)"
      % (n, pct(50), pct(90), pct(99), pct(99.9)))
PY
stop_setup_server
printf 'import: %d devices in %.1fs (%.0f/s); server peak RSS %d MiB\n' "$devices" \
  "$(echo "$end - $start" | bc)" "$(echo "$devices / ($end - $start)" | bc -l)" $((rss_kb / 1024)) >&2

echo "==> Authenticate: no-op baseline vs iotauthd ($devices devices cached), audit log on" >&2
rc=0
BENCH_START_TIMEOUT_S=600 tools/bench/run_identity_bench.sh --mode="$mode" \
  --requests_file="$work/requests.jsonl" --out_dir="$work/audit_on" "${pass[@]}" -- \
  "$B/services/server/iotauthd" "${COMMON[@]}" --announce_port || rc=$?
echo "==> the same with the audit log off (${AUDIT_OFF[*]})" >&2
BENCH_START_TIMEOUT_S=600 tools/bench/run_identity_bench.sh --mode="$mode" \
  --requests_file="$work/requests.jsonl" --out_dir="$work/audit_off" "${pass[@]}" -- \
  "$B/services/server/iotauthd" "${COMMON[@]}" "${AUDIT_OFF[@]}" --announce_port || rc=$?
/usr/bin/python3 - "$work" <<'PY'
import json, os, sys
w = sys.argv[1]
j = lambda d, f: json.load(open(os.path.join(w, d, f)))
on, off = j("audit_on", "target_peak.json"), j("audit_off", "target_peak.json")
n1, n2 = j("audit_on", "noop_peak.json"), j("audit_off", "noop_peak.json")
print("\nSummary (peak, closed loop):")
for name, r in (("no-op (1st)", n1), ("iotauthd audit on", on), ("no-op (2nd)", n2), ("iotauthd audit off", off)):
    print("  %-20s %8.0f QPS  p99 %6.0f us  server CPU %5.1f us/call" % (
        name, r["qps"], r["latency_us"]["p99"], r.get("server_cpu_us_per_call") or 0))
print("  identity vs no-op:   audit on %.2f, audit off %.2f (floor 0.85)" % (on["qps"] / n1["qps"], off["qps"] / n2["qps"]))
print("  audit on / audit off: %.2f (floor 0.95)" % (on["qps"] / off["qps"]))
# Zero drops: every decision of the audit-on runs is in the log, and no GAP event.
# Counted by reading the store directly (an independent reader of its format).
import glob, struct
auth = gaps = 0
segs = sorted(glob.glob(os.path.join(w, "data", "audit", "*.seg")))
if segs:  # the segment log (services/audit/log_audit_store.h): frames u32 len, u8 kind
    tag1 = b"iotauth.audit.v1.AuditEvent/1"
    for path in segs:
        data = open(path, "rb").read()
        pos = 16
        while pos + 5 <= len(data):
            n, kind = struct.unpack_from(">IB", data, pos)
            if kind == ord("E"):
                c = pos + 5 + 32  # after the frame header and the stored hash
                if data[c:c + 8] == b"iaudit/2":
                    # version 2: tag, sequence, raw prev_hash, flags, [time], type
                    flags = data[c + 48]
                    etype = struct.unpack_from(">i", data, c + 49 + (12 if flags & 1 else 0))[0]
                else:
                    # version 1: tag, field 1 (8+8), field 2 (8+len), field 3 (8+0/12), field 4
                    c += len(tag1) + 16
                    c += 8 + struct.unpack_from(">I", data, c + 4)[0]
                    c += 8 + struct.unpack_from(">I", data, c + 4)[0]
                    etype = struct.unpack_from(">i", data, c + 8)[0]
                auth += etype == 1
                gaps += etype == 6
            pos += 5 + n
else:
    import sqlite3
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(w, "data", "audit.db"), uri=True)
    auth = db.execute("SELECT COUNT(*) FROM audit_events WHERE type = 1").fetchone()[0]
    gaps = db.execute("SELECT COUNT(*) FROM audit_events WHERE type = 6").fetchone()[0]
print("  audit log: %d authentication events committed at up to %.0f/s, %d GAP events (drops)"
      % (auth, on["qps"], gaps))
PY
if ((rounds > 0)); then
  echo "==> interleaved: no-op, audit on, audit off side by side; $rounds rounds of $round_duration each" >&2
  il="$work/interleaved"
  mkdir -p "$il"
  inames=(noop on off)
  ipids=() iports=() isent=(0 0 0)
  for n in "${inames[@]}"; do
    if [[ $n == noop ]]; then
      cmd=("$B/tools/bench/noop_server" --port=0)
    else
      # Each its own copy of the registry (and its own audit log).
      registry_copy_args "$il/data_$n"
      [[ $n == off ]] && ARGS+=("${AUDIT_OFF[@]}")
      cmd=("$B/services/server/iotauthd" "${ARGS[@]}" --announce_port)
    fi
    # Up to 600 s: loading 1 M devices takes a while.
    start_server "$il/$n.server.out" 600 "$server_cpus" "${cmd[@]}"
    ipids+=("$started_pid")
    iports+=("$started_port")
  done
  # ilg I OUT [loadgen flags...]: one run against interleaved server I, its requests
  # continuing where its last run stopped; the JSON result to OUT.
  ilg() {
    local i="$1" out="$2"
    shift 2
    taskset -c "$client_cpus" "$B/tools/bench/iotauth_loadgen" --target="127.0.0.1:${iports[$i]}" \
      --mode="$mode" --warmup=1s --requests_file="$work/requests.jsonl" \
      --server_pid="${ipids[$i]}" --start_request="${isent[$i]}" --json --label="${inames[$i]}" \
      "$@" >"$out" 2>/dev/null
  }
  # advance_sent I OUT: device-triple requests are single-use, so server I's next run
  # starts after the ones OUT's run sent.
  advance_sent() {
    isent[$1]=$(( isent[$1] + $(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("requests_sent", 0))' "$2") ))
  }
  for r in $(seq 1 "$rounds"); do
    # The order rotates each round (no-op, on, off; then on, off, no-op; ...): each
    # server follows each other one equally often, so what a run leaves behind on the
    # CPU (caches, deferred kernel work) does not always land on the same server.
    for k in "${!inames[@]}"; do
      i=$(( (k + r - 1) % ${#inames[@]} ))
      n="${inames[$i]}"
      ilg "$i" "$il/r${r}_$n.json" --channels="$channels" --concurrency="$concurrency" \
        --duration="$round_duration" || true
      advance_sent "$i" "$il/r${r}_$n.json"
    done
    echo "  round $r/$rounds done" >&2
  done
  if ((cost_rounds > 0)); then
    echo "==> audit cost: audit on and audit off side by side at $cost_rate/s each," \
      "$cost_rounds rounds of $cost_duration" >&2
    for r in $(seq 1 "$cost_rounds"); do
      lgs=()
      for i in 1 2; do
        ilg "$i" "$il/cost${r}_${inames[$i]}.json" --channels=2 --concurrency="$concurrency" \
          --rate="$cost_rate" --duration="$cost_duration" &
        lgs+=($!)
      done
      wait "${lgs[@]}" || true
      for i in 1 2; do advance_sent "$i" "$il/cost${r}_${inames[$i]}.json"; done
      echo "  cost round $r/$cost_rounds done" >&2
    done
  fi
  if ((half_rounds > 0)); then
    # Half of each server's median peak over the QPS rounds.
    read -r -a ihalf < <(/usr/bin/python3 - "$il" "$rounds" "${inames[@]}" <<'PY'
import json, os, statistics, sys
d, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(" ".join(str(max(1, round(statistics.median(
    json.load(open(os.path.join(d, "r%d_%s.json" % (r, n))))["qps"] for r in range(1, rounds + 1)) / 2)))
    for n in names))
PY
)
    echo "==> p99 at half of peak, interleaved: ${inames[*]} at ${ihalf[*]}/s;" \
      "$half_rounds rounds of $half_duration each" >&2
    for r in $(seq 1 "$half_rounds"); do
      for k in "${!inames[@]}"; do
        i=$(( (k + r - 1) % ${#inames[@]} ))
        n="${inames[$i]}"
        ilg "$i" "$il/half${r}_$n.json" --channels="$channels" --concurrency=$((concurrency * 4)) \
          --rate="${ihalf[$i]}" --duration="$half_duration" || true
        advance_sent "$i" "$il/half${r}_$n.json"
      done
      echo "  half-peak round $r/$half_rounds done" >&2
    done
  fi
  kill "${ipids[@]}" 2>/dev/null || true
  wait "${ipids[@]}" 2>/dev/null || true
  /usr/bin/python3 - "$il" "$rounds" "$cost_rounds" "$cost_rate" "$half_rounds" <<'PY' || rc=3
import json, os, statistics, sys
d, rounds, cost_rounds, cost_rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
half_rounds = int(sys.argv[5])
print("\nInterleaved rounds (same load, the three servers take turns; QPS / server CPU us per call):")
# (numerator, denominator, floor) of each ratio reported.
pairs = (("on", "noop", 0.85), ("off", "noop", 0.85), ("on", "off", 0.95))
ratios = {(a, b): [] for a, b, _ in pairs}
bad = []
both_cb = 0
off_cpu = []  # audit off's server CPU per call at peak
for r in range(1, rounds + 1):
    x = {n: json.load(open(os.path.join(d, "r%d_%s.json" % (r, n)))) for n in ("noop", "on", "off")}
    off_cpu.append(x["off"].get("server_cpu_us_per_call") or 0)
    for n, v in x.items():
        if v["errors"] or v["deny"] or v.get("machine_busy"):
            bad.append("round %d %s" % (r, n))
    # A ratio of two client-bound runs compares the client with itself.
    cb = {n: bool(v.get("client_bound")) for n, v in x.items()}
    line = []
    for a, b, _ in pairs:
        ratios[(a, b)].append(x[a]["qps"] / x[b]["qps"])
        both = cb[a] and cb[b]
        both_cb += both
        line.append("%s/%s %.2f%s" % (a, b, ratios[(a, b)][-1], "*" if both else " "))
    print("  round %d: " % r + "  ".join(
        "%s %6.0f/%4.1f%s" % (n, v["qps"], v.get("server_cpu_us_per_call") or 0,
                              "cb" if cb[n] else "  ")
        for n, v in x.items()) + "   " + " ".join(line))
for a, b, floor in pairs:
    v = ratios[(a, b)]
    print("  %-8s median %.2f (min %.2f, max %.2f; floor %.2f)" % (
        "%s/%s" % (a, b), statistics.median(v), min(v), max(v), floor))
print("  (QPS/server CPU us per call; cb: the client used > 0.9 core, it may be the limit)")
if both_cb:
    print("  * both runs client-bound: that ratio measures the client, not the servers (%d of %d)"
          % (both_cb, 3 * rounds))
if cost_rounds:
    print("\nAudit cost, audit on and off side by side at %s/s each (server CPU us per call):" % cost_rate)
    diffs = []
    for r in range(1, cost_rounds + 1):
        x = {n: json.load(open(os.path.join(d, "cost%d_%s.json" % (r, n)))) for n in ("on", "off")}
        c = {n: v.get("server_cpu_us_per_call") or 0 for n, v in x.items()}
        for n, v in x.items():
            # Fewer calls than the rate asked for, or no CPU figure, make the difference
            # meaningless (a late send does not: the two clients share one core).
            if v["errors"] or v["deny"] or v["qps"] < 0.98 * float(cost_rate) or not c[n]:
                bad.append("cost round %d %s" % (r, n))
        diffs.append(c["on"] - c["off"])
        print("  round %d: on %6.0f QPS %5.2f us  off %6.0f QPS %5.2f us  audit %+.2f us/call" % (
            r, x["on"]["qps"], c["on"], x["off"]["qps"], c["off"], diffs[-1]))
    cost, base = statistics.median(diffs), statistics.median(off_cpu)
    print("  audit cost median %.2f us/call (min %.2f, max %.2f)" % (cost, min(diffs), max(diffs)))
    if base > 0:
        # A saturated server core serves calls at 1 / (CPU per call).
        print("  on/off a saturated server core would give: %.2f (audit off's %.1f us/call at peak,"
              " interleaved median, plus the audit's %.2f; floor 0.95)" % (base / (base + cost), base, cost))
if half_rounds:
    print("\np99 at half of peak, interleaved (fixed rate at half of each one's median peak;"
          " p99 us, * = rate not kept):")
    p99 = {n: [] for n in ("noop", "on", "off")}
    for r in range(1, half_rounds + 1):
        x = {n: json.load(open(os.path.join(d, "half%d_%s.json" % (r, n)))) for n in p99}
        cells = []
        for n, v in x.items():
            if v["errors"] or v["deny"] or v.get("machine_busy"):
                bad.append("half-peak round %d %s" % (r, n))
            p99[n].append(v["latency_us"]["p99"])
            cells.append("%s %6.0f @%5.0f/s%s" % (n, p99[n][-1], v["target_rate"],
                                                  "*" if v.get("rate_kept") is False else " "))
        print("  round %d: " % r + "   ".join(cells))
    for n, v in p99.items():
        print("  %-5s median %6.0f us (min %.0f, max %.0f); %d of %d rounds <= 1000 us" % (
            n, statistics.median(v), min(v), max(v), sum(1 for p in v if p <= 1000), len(v)))
if bad:
    print("  INVALID rounds (errors, DENYs or a busy machine): " + ", ".join(bad))
    sys.exit(1)
PY
fi
# Reading the log back: a device's whole history and an absent device, through the
# server's Query (block summaries pick the blocks to scan; see services/audit).
echo "==> audit Query by device over the whole log (iotauthctl audit export, paging 1000)" >&2
start_setup_server
for d in bench-0000042 bench-0054321 no-such-device; do
  s=$(date +%s.%N)
  "${CTL[@]}" audit export --tenant bench --device "$d" --output "$work/export.jsonl" 2>/dev/null
  e=$(date +%s.%N)
  printf '  device %-15s %5d events in %6.1f ms\n' "$d" "$(wc -l <"$work/export.jsonl")" \
    "$(echo "($e - $s) * 1000" | bc -l)"
done
stop_setup_server
exit $rc
