#!/usr/bin/env python3
"""Writes a --requests_file for `iotauth_loadgen --mode=sas`: one AuthenticateRequest
per line (proto JSON), each an Azure IoT Hub SAS token for a different device.

  make_sas_requests.py --hub=hub.example.net --count=100000 --key=BASE64 > sas.jsonl

Device ids are `<prefix><index, 6 digits>`; every device must exist on the target
with primary key --key (base64), or the benchmark measures DENYs (loadgen exits 3).
"""
import argparse
import base64
import hashlib
import hmac
import json
import time
import urllib.parse


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hub", required=True, help="tenant's hub host, e.g. hub.example.net")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--prefix", default="bench-")
    p.add_argument("--key", required=True, help="device primary key, base64")
    p.add_argument("--ttl", type=int, default=24 * 3600, help="token lifetime, seconds")
    p.add_argument("--connect", action="store_true",
                   help="as an MQTT CONNECT (ConnectInfo) instead of a typed credential")
    a = p.parse_args()
    key = base64.b64decode(a.key, validate=True)
    se = int(time.time()) + a.ttl
    for i in range(a.count):
        dev = "%s%06d" % (a.prefix, i)
        sr = urllib.parse.quote("%s/devices/%s" % (a.hub, dev), safe="")
        sig = base64.b64encode(
            hmac.new(key, ("%s\n%d" % (sr, se)).encode(), hashlib.sha256).digest()).decode()
        token = "SharedAccessSignature sr=%s&sig=%s&se=%d" % (
            sr, urllib.parse.quote(sig, safe=""), se)
        if a.connect:
            # ConnectInfo.password is `bytes`: proto JSON wants it base64-encoded.
            req = {"connect": {
                "clientId": dev,
                "username": "%s/%s/?api-version=2021-04-12" % (a.hub, dev),
                "password": base64.b64encode(token.encode()).decode(),
                "peerAddress": "127.0.0.1:%d" % (20000 + i % 40000),
                "listener": "mqtts",
                "protocol": "PROTOCOL_MQTT"}}
        else:
            req = {"credential": {"sas": {"token": token, "deviceId": dev}}}
        req["requestId"] = "bench-%d" % i
        print(json.dumps(req, separators=(",", ":")))


if __name__ == "__main__":
    main()
