# Sourced by the *_server_bench.sh scripts: the iotauthd they benchmark, with the
# settings the no-op baseline shares (plaintext, caller auth off, no metrics listener).
# Needs $B (bazel-out/k8-opt/bin) and $work; sets COMMON, and start_setup_server sets
# spid, port and CTL (an iotauthctl command line for that server).

COMMON=(--data_dir="$work/data" --set=grpc.address=127.0.0.1:0 --set=metrics.address=
        --set=grpc.tls.mode=insecure --set=auth.disabled=true --set=log.level=warn)

# Starts iotauthd for data set-up; stop it with `stop_setup_server`.
start_setup_server() {
  "$B/services/server/iotauthd" "${COMMON[@]}" --announce_port >"$work/setup.out" 2>"$work/setup.err" &
  spid=$!
  port=""
  for _ in $(seq 1 300); do
    port="$(awk '/^LISTENING /{print $2; exit}' "$work/setup.out")"
    [[ -n "$port" ]] && break
    sleep 0.1
  done
  [[ -n "$port" ]] || { echo "iotauthd did not start:" >&2; cat "$work/setup.err" >&2; exit 1; }
  CTL=("$B/clients/iotauthctl/iotauthctl" --insecure --address "127.0.0.1:$port")
}

stop_setup_server() {
  kill -TERM "$spid"
  wait "$spid" || true
}
