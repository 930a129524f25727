# Sourced by the *_server_bench.sh scripts: the iotauthd they benchmark, with the
# settings the no-op baseline shares (plaintext, caller auth off, no metrics listener).
# Needs $B (bazel-out/k8-opt/bin) and $work; sets COMMON; wait_listening waits for a
# server's port, and start_setup_server sets
# spid, port and CTL (an iotauthctl command line for that server).

COMMON=(--data_dir="$work/data" --set=grpc.address=127.0.0.1:0 --set=metrics.address=
        --set=grpc.tls.mode=insecure --set=auth.disabled=true --set=log.level=warn)

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
