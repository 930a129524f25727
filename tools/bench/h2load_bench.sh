#!/usr/bin/env bash
# Authenticate throughput with h2load (Debian's nghttp2-client) as the load generator:
# the no-op baseline, iotauthd with the audit log, iotauthd without it, and the no-op
# answering iotauthd's own answer byte for byte ("same": what the answer's size
# costs, apart from the work), side by side, taking turns under the same h2load
# command, in rounds.
#
#   tools/bench/h2load_bench.sh [--devices=N (100000)] [--rounds=N (5)]
#       [--duration=S (5)] [--connections=C (4)] [--streams=M (16)]
#       [--batch=N (16)]
#
# With --batch=N (0: none), iotauthd's AuthenticateBatch of N devices takes its turn in
# the same rounds ("on_b", "off_b": the same two processes), and the report gives the
# devices per second it verifies against the no-op's calls per second. That is what a
# gateway that batches gets; it is not the floor, which is about single calls.
#
# Why a second generator: iotauth_loadgen needs about as much CPU per call as the
# no-op server, so on these 2 cores nearly every closed-loop run is limited by the
# client, and the ratio compares the client with itself. h2load needs less, so
# more of the ratio is the servers'. Each run reports whether h2load itself used more
# than 0.9 of its core.
#
# h2load knows nothing about gRPC (/work/shared/notes/performance.md): it counts
# any HTTP 200 as a success, a gRPC error or a DENY included, and sends one fixed
# body. So:
#   - the body is one registered device's SAS request (iotauth_loadgen --dump_body);
#   - one call to each server is checked with curl before and after the rounds
#     (grpc-status 0, and DECISION_ALLOW decoded by protoc);
#   - iotauthd's own decision counters (its Prometheus endpoint, scraped before and
#     after) must have grown by allows only, as many as h2load counted.
# Client on CPU 0, servers on CPU 1 (taskset); plaintext, no caller auth (as the
# no-op). Server CPU per call from /proc/PID/stat; h2load's from the shell's `times`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
devices=100000 rounds=5 duration=5 connections=4 streams=16 batch=16
for a in "$@"; do
  case "$a" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --devices=*) devices="${a#*=}" ;;
    --rounds=*) rounds="${a#*=}" ;;
    --duration=*) duration="${a#*=}" ;;
    --connections=*) connections="${a#*=}" ;;
    --streams=*) streams="${a#*=}" ;;
    --batch=*) batch="${a#*=}" ;;
    *) echo "h2load_bench.sh: unknown flag $a (see --help)" >&2; exit 2 ;;
  esac
done
command -v h2load >/dev/null && command -v curl >/dev/null && command -v protoc >/dev/null ||
  { echo "h2load, curl or protoc is missing: run 'bash tools/setup.sh'" >&2; exit 2; }
bazel build -c opt //services/server:iotauthd //clients/iotauthctl //tools/bench:all >&2
B="$ROOT/bazel-out/k8-opt/bin"
work="$(mktemp -d /tmp/iotauth-h2load.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
source "$ROOT/tools/bench/bench_server.sh"

(( batch >= 0 && batch <= 1000 )) || { echo "h2load_bench.sh: --batch is 0 to 1000" >&2; exit 2; }
make_bench_requests "$devices" sas 0 "$(( batch > 1 ? batch : 1 ))"
start_setup_server
import_bench_devices
stop_setup_server
"$B/tools/bench/iotauth_loadgen" --mode=sas --requests_file="$work/requests.jsonl" \
  --dump_body="$work/body.bin" >/dev/null
single=/iotauth.identity.v1.IdentityService/Authenticate
if (( batch > 0 )); then
  "$B/tools/bench/iotauth_loadgen" --mode=sas --requests_file="$work/requests.jsonl" \
    --dump_body="$work/batch.bin" --dump_batch="$batch" >/dev/null
fi

# check I: one call to entry I with curl; fails unless grpc-status 0 and every answer
# (one, or one per device of the batch) is an ALLOW.
check() {
  local i="$1" status type=AuthenticateResponse want=1 got
  [[ ${names[$i]} == *_b ]] && type=AuthenticateBatchResponse want="$batch"
  status="$(curl -sv --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"${bodies[$i]}" -o "$work/resp.bin" "http://127.0.0.1:${ports[$i]}${paths[$i]}" 2>&1 |
    tr -d '\r' | awk -F': ' 'tolower($1)=="< grpc-status"{print $2}')"
  [[ $status == 0 ]] || { echo "${names[$i]}: grpc-status '${status}', not 0" >&2; return 1; }
  got="$(tail -c +6 "$work/resp.bin" | protoc -I. --decode="iotauth.identity.v1.$type" \
    proto/iotauth/identity/v1/identity.proto | grep -c "decision: DECISION_ALLOW" || true)"
  [[ $got == "$want" ]] ||
    { echo "${names[$i]}: $got of $want answers are DECISION_ALLOW" >&2; return 1; }
}
# noop: the no-op answering {decision: ALLOW}; same: the no-op answering the very
# bytes iotauthd answered (its identity, expiry, TTL, fingerprint, request id), so
# that "same" measures the work and "noop" the work plus the bigger answer.
# on_b, off_b: AuthenticateBatch calls to the on and off processes.
names=(noop on off same)
(( batch > 0 )) && names+=(on_b off_b)
pids=() ports=() mports=() paths=() bodies=()
for n in "${names[@]}"; do
  out="$work/$n.out"
  if [[ $n == *_b ]]; then
    base=1
    [[ $n == off_b ]] && base=2
    pids+=("${pids[$base]}")
    ports+=("${ports[$base]}")
    mports+=("${mports[$base]}")
    paths+=(/iotauth.identity.v1.IdentityService/AuthenticateBatch)
    bodies+=("$work/batch.bin")
    continue
  fi
  paths+=("$single")
  bodies+=("$work/body.bin")
  if [[ $n == noop ]]; then
    cmd=("$B/tools/bench/noop_server" --port=0)
  elif [[ $n == same ]]; then
    check 1
    tail -c +6 "$work/resp.bin" >"$work/same.pb"
    cmd=("$B/tools/bench/noop_server" --port=0 --response_file="$work/same.pb")
  else
    # The metrics listener for the decision counters; info level for the line that
    # names its port.
    registry_copy_args "$work/data_$n" --set=metrics.address= --set=log.level=
    ARGS+=(--set=metrics.address=127.0.0.1:0 --set=log.level=info)
    [[ $n == off ]] && ARGS+=("${AUDIT_OFF[@]}")
    cmd=("$B/services/server/iotauthd" "${ARGS[@]}" --announce_port)
  fi
  start_server "$out" 600 1 "${cmd[@]}"
  pids+=("$started_pid")
  ports+=("$started_port")
  mp=""
  [[ $n == noop || $n == same ]] || mp="$(grep -o '"metrics_port":"\?[0-9]*' "$out.err" | head -1 | cut -d: -f2 | tr -dc 0-9)"
  mports+=("$mp")
done

# decisions I: "allows denies" from server I's decision counters (0 0 for the no-op).
decisions() {
  [[ -n ${mports[$1]} ]] || { echo "0 0"; return; }
  curl -s "http://127.0.0.1:${mports[$1]}/metrics" | awk '
    /^iotauth_identity_decisions_total\{/ { v = $NF + 0; if ($0 ~ /decision="allow"/) a += v; else d += v }
    END { printf "%d %d\n", a, d }'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "==> checking one call to each server with curl (grpc-status, DECISION_ALLOW)" >&2
for i in "${!names[@]}"; do check "$i"; done
declare -A before
for i in "${!names[@]}"; do before[$i]="$(decisions "$i")"; done

# h2run TAG I: one h2load run against entry I; its output (with h2load's CPU time),
# per-call log and the server's CPU ticks go to $work/TAG.*.
hz="$(getconf CLK_TCK)"
h2run() {
  local tag="$1" i="$2" s0 s1
  s0="$(cpu_ticks "${pids[$i]}")"
  rm -f "$work/$tag.log"
  # `times` prints the shell's, then its children's, user and system time.
  ( taskset -c 0 h2load -D "$duration" -c "$connections" -m "$streams" -t 1 \
      -H 'content-type: application/grpc' -H 'te: trailers' -d "${bodies[$i]}" \
      --log-file="$work/$tag.log" "http://127.0.0.1:${ports[$i]}${paths[$i]}"
    times ) >"$work/$tag.out" 2>&1
  s1="$(cpu_ticks "${pids[$i]}")"
  echo "$(( s1 - s0 )) $hz" >"$work/$tag.cpu"
}

echo "==> $rounds rounds: h2load -D $duration -c $connections -m $streams -t 1 against each" \
  "server in turn (the order rotates)" >&2
for r in $(seq 1 "$rounds"); do
  for k in "${!names[@]}"; do
    i=$(( (k + r - 1) % ${#names[@]} ))
    h2run "r${r}_${names[$i]}" "$i"
  done
  echo "  round $r/$rounds done" >&2
done

echo "==> checking one call to each server again" >&2
for i in "${!names[@]}"; do check "$i"; done
for i in "${!names[@]}"; do echo "${before[$i]} $(decisions "$i")" >"$work/${names[$i]}.decisions"; done
kill "${pids[@]}" 2>/dev/null || true
wait "${pids[@]}" 2>/dev/null || true

/usr/bin/python3 - "$work" "$rounds" "$duration" "$batch" <<'PY'
import os, re, statistics, sys
w, rounds, duration, batch = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
base = ("noop", "on", "off", "same")
names = base + (("on_b", "off_b") if batch else ())
def secs(t):  # `times` format: 0m1.234s
    m = re.match(r"(\d+)m([\d.]+)s", t)
    return int(m.group(1)) * 60 + float(m.group(2))
bad, runs = [], {}
def parse(tag):  # one h2load run: $work/TAG.{out,cpu,log}
    out = open(os.path.join(w, tag + ".out")).read()
    qps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    done, ok = int(req.group(3)), int(req.group(4))
    # The last line of `times`: the children's user and system time.
    cu, cs = re.findall(r"(\d+m[\d.]+s) (\d+m[\d.]+s)", out)[-1]
    client_core = (secs(cu) + secs(cs)) / duration
    ticks, hz = map(int, open(os.path.join(w, tag + ".cpu")).read().split())
    lat = sorted(int(l.split()[2]) for l in open(os.path.join(w, tag + ".log"))
                 if l.split()[1] == "200")
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] if lat else 0
    if ok != done or ok == 0:
        bad.append("%s: %d of %d streams succeeded" % (tag, ok, done))
    return dict(qps=qps, ok=ok, server_us=ticks / hz / max(ok, 1) * 1e6,
                client_bound=client_core > 0.9, p50=pct(50), p99=pct(99))
for r in range(1, rounds + 1):
    for n in names:
        runs[(r, n)] = parse("r%d_%s" % (r, n))
print("\nh2load rounds (QPS / server CPU us per call; cb: h2load used > 0.9 core; same: the"
      " no-op\nanswering iotauthd's own answer, byte for byte):")
pairs = (("on", "noop", 0.85), ("off", "noop", 0.85), ("on", "off", 0.95),
         ("on", "same", 0.85), ("off", "same", 0.85))
ratios = {(a, b): [] for a, b, _ in pairs}
both_cb = 0
for r in range(1, rounds + 1):
    x = {n: runs[(r, n)] for n in names}
    cells = []
    for a, b, _ in pairs:
        ratios[(a, b)].append(x[a]["qps"] / x[b]["qps"])
        both = x[a]["client_bound"] and x[b]["client_bound"]
        both_cb += both
        cells.append("%s/%s %.2f%s" % (a, b, ratios[(a, b)][-1], "*" if both else " "))
    print("  round %d: " % r + "  ".join("%s %6.0f/%4.1f%s" % (
        n, v["qps"], v["server_us"], "cb" if v["client_bound"] else "  ") for n, v in x.items())
          + "   " + " ".join(cells))
for a, b, floor in pairs:
    v = ratios[(a, b)]
    print("  %-8s median %.2f (min %.2f, max %.2f; floor %.2f)" % (
        "%s/%s" % (a, b), statistics.median(v), min(v), max(v), floor))
if both_cb:
    print("  * both runs limited by h2load: that ratio measures the client (%d of %d)"
          % (both_cb, len(pairs) * rounds))
if batch:
    print("  AuthenticateBatch of %d devices per call (on_b, off_b above: calls per second), not"
          " a floor:" % batch)
    for n in ("on_b", "off_b"):
        v = [runs[(r, n)] for r in range(1, rounds + 1)]
        dev = [x["qps"] * batch for x in v]
        rel = [x["qps"] * batch / runs[(r + 1, "noop")]["qps"] for r, x in enumerate(v)]
        print("  %-5s median %7.0f devices/s, %.2f x the no-op's calls/s (min %.2f, max %.2f);"
              " server %.1f us per device" % (
                  n, statistics.median(dev), statistics.median(rel), min(rel), max(rel),
                  statistics.median(x["server_us"] for x in v) / batch))
for n in names:
    v = [runs[(r, n)] for r in range(1, rounds + 1)]
    print("  %-5s latency medians over rounds: p50 %5.0f us, p99 %6.0f us (closed loop, %s)" % (
        n, statistics.median(x["p50"] for x in v), statistics.median(x["p99"] for x in v),
        "queueing at the peak"))
# iotauthd's own count: every call h2load made was an ALLOW.
for n in ("on", "off"):
    a0, d0, a1, d1 = map(int, open(os.path.join(w, n + ".decisions")).read().split())
    sent = sum(runs[(r, n)]["ok"] for r in range(1, rounds + 1))
    if batch:  # each batch call is `batch` decisions
        sent += batch * sum(runs[(r, n + "_b")]["ok"] for r in range(1, rounds + 1))
    print("  %-5s decision counters: +%d allow, +%d deny; h2load counted %d decisions (the rest:"
          " the curl checks, and calls in flight when h2load stopped)" % (n, a1 - a0, d1 - d0, sent))
    if d1 != d0 or a1 - a0 < sent:
        bad.append("%s: %d denies, %d allows for %d calls" % (n, d1 - d0, a1 - a0, sent))
if bad:
    print("INVALID: " + "; ".join(bad))
    sys.exit(3)
PY
