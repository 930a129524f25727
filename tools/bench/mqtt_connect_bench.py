#!/usr/bin/python3
"""Added CONNECT latency of the iotauth Mosquitto plugin, in one run.

Starts iotauthd (embedded defaults, ephemeral ports), registers N devices, then
two Debian mosquitto brokers on plaintext loopback listeners: one with
`allow_anonymous true` and no plugin (the baseline), one with the plugin. A
python3-paho-mqtt client connects each device in turn (SAS token as password;
distinct devices, so the plugin's decision cache does not answer) and times
CONNECT -> CONNACK. Prints p50/p90/p99 for both and the difference.

  bazel build -c opt //services/server:iotauthd //clients/mosquitto:libiotauth_mosquitto.so //proto:iotauth_descriptors
  /usr/bin/python3 tools/bench/mqtt_connect_bench.py [--connects=1000]
"""
import argparse
import base64
import getpass
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import iotauth_harness as h  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

HUB = "bench.example.net"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_broker(d, name, extra):
    port = free_port()
    conf = os.path.join(d, name + ".conf")
    with open(conf, "w") as f:
        f.write("\n".join(["per_listener_settings false", "user %s" % getpass.getuser(),
                           "log_dest none", "listener %d 127.0.0.1" % port] + extra + [""]))
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto %s did not start" % name)


def sas(device, key_b64, se):
    sr = urllib.parse.quote("%s/devices/%s" % (HUB, device), safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key_b64), ("%s\n%d" % (sr, se)).encode(),
                                    hashlib.sha256).digest()).decode()
    return "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, urllib.parse.quote(sig, safe=""), se)


def connect_once(port, client_id, username, password):
    done = threading.Event()
    result = {}
    c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311)
    c.username_pw_set(username, password)

    def on_connect(client, userdata, flags, rc):
        result["rc"] = rc
        result["t"] = time.perf_counter()
        done.set()
    c.on_connect = on_connect
    t0 = time.perf_counter()
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    if not done.wait(10):
        raise RuntimeError("no CONNACK")
    c.disconnect()
    c.loop_stop()
    if result["rc"] != 0:
        raise RuntimeError("connect refused rc=%d for %s" % (result["rc"], client_id))
    return (result["t"] - t0) * 1e6


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connects", type=int, default=1000)
    a = ap.parse_args()
    opt = os.path.join(ROOT, "bazel-out", "k8-opt", "bin")
    binary = os.path.join(opt, "services/server/iotauthd")
    plugin = os.path.join(opt, "clients/mosquitto/libiotauth_mosquitto.so")
    os.environ.setdefault("IOTAUTH_ROOT", ROOT)
    server = h.Server()
    server.binary = binary
    server.start()
    d = tempfile.mkdtemp(prefix="iotauth-mqttbench-")
    procs = []
    try:
        admin = server.channel("admin")
        reg = "iotauth.registry.v1.DeviceRegistry/"
        h.call(admin, reg + "CreateTenant", {"tenant": {"id": "mb", "hub_host": HUB}})
        h.call(admin, reg + "CreateProduct", {"product": {"tenant_id": "mb", "product_key": "pk-mb",
                                                          "allowed_credential_types": ["CREDENTIAL_TYPE_SAS"]}})
        se = int(time.time()) + 3600
        creds = []
        for i in range(a.connects):
            dev = "m-%06d" % i
            key = base64.b64encode(os.urandom(32)).decode()
            creds.append((dev, key))
        h.client_stream(admin, reg + "ImportDevices", [{"tenant_id": "mb", "devices": [
            {"tenant_id": "mb", "device_id": dev, "product_key": "pk-mb", "status": "DEVICE_STATUS_ENABLED",
             "credentials": {"symmetric_key": {"primary_key": k, "secondary_key": k}}}
            for dev, k in creds]}]).result(timeout=120)
        time.sleep(1.0)
        base, bport = start_broker(d, "baseline", ["allow_anonymous true"])
        procs.append(base)
        plug, pport = start_broker(d, "plugin", [
            "allow_anonymous false", "plugin " + plugin, "plugin_opt_address " + server.address,
            "plugin_opt_ca_file " + server.pki("ca.pem"), "plugin_opt_cert_file " + server.pki("gateway.pem"),
            "plugin_opt_key_file " + server.pki("gateway.key"), "plugin_opt_timeout_ms 2000"])
        procs.append(plug)
        res = {"baseline": [], "plugin": []}
        # Interleave the two so drift on the machine affects both alike.
        for dev, key in creds:
            user = "%s/%s/?api-version=2021-04-12" % (HUB, dev)
            res["baseline"].append(connect_once(bport, dev, user, "x"))
            res["plugin"].append(connect_once(pport, dev, user, sas(dev, key, se)))
        print("CONNECT -> CONNACK over loopback, %d connects each, distinct devices (no cache hits)" % a.connects)
        for name, v in res.items():
            print("%-9s p50 %6.0f us  p90 %6.0f us  p99 %6.0f us  max %6.0f us" % (
                name, pct(v, 50), pct(v, 90), pct(v, 99), max(v)))
        print("added by the plugin: p50 %+.0f us, p99 %+.0f us" % (
            pct(res["plugin"], 50) - pct(res["baseline"], 50), pct(res["plugin"], 99) - pct(res["baseline"], 99)))
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        server.stop()


if __name__ == "__main__":
    main()
