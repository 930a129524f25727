"""Identity, registry and audit end to end, through the real all-in-one binary:
devices registered with the project's CLI; SAS tokens and device-triple
signatures computed here with Python's hmac (independently of the project's
code); Authenticate over Debian's python3-grpcio and `buf curl`; audit events seen
on Watch and Query; secrets planted and searched for in the database, the logs
and the metrics; acknowledged writes surviving kill -9."""

import base64
import functools
import glob
import hashlib
import hmac
import json
import os
import re
import subprocess
import threading
import time
import unittest
import urllib.parse

import grpc

import iotauth_harness as h

HUB = "hub.e2e.example.net"
AUTH = "iotauth.identity.v1.IdentityService/Authenticate"
REG = "iotauth.registry.v1.DeviceRegistry/"


def sas_token(hub, device, key_b64, expiry):
    sr = urllib.parse.quote("%s/devices/%s" % (hub, device), safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key_b64), ("%s\n%d" % (sr, expiry)).encode(),
                                    hashlib.sha256).digest()).decode()
    return "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, urllib.parse.quote(sig, safe=""), expiry)


def triple_connect(product_key, device, secret, client_id, ts_ms, method="hmacsha256"):
    content = "clientId%sdeviceName%sproductKey%stimestamp%d" % (client_id, device, product_key, ts_ms)
    alg = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1, "hmacmd5": hashlib.md5}[method]
    pw = hmac.new(secret.encode(), content.encode(), alg).hexdigest()
    return {"client_id": "%s|securemode=2,signmethod=%s,timestamp=%d|" % (client_id, method, ts_ms),
            "username": "%s&%s" % (device, product_key),
            "password": base64.b64encode(pw.encode()).decode()}


def connect_sas(device, token):
    return {"connect": {"client_id": device, "username": "%s/%s/?api-version=2021-04-12" % (HUB, device),
                        "password": base64.b64encode(token.encode()).decode(),
                        "peer_address": "203.0.113.7:50000", "protocol": "PROTOCOL_MQTT"}}


class IdentityE2ETest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server().start()
        cls.admin = cls.server.channel("admin")
        cls.gateway = cls.server.channel("gateway")
        cls.ctl_base = [h.runfile("clients/iotauthctl/iotauthctl"), "--address", cls.server.address,
                        "--data_dir", cls.server.data_dir]

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        if rc != 0:
            raise AssertionError("server exited %s:\n%s" % (rc, cls.server.log()))

    def ctl(self, *args, check=True):
        p = subprocess.run(self.ctl_base + list(args), capture_output=True, text=True, timeout=60)
        if check:
            self.assertEqual(p.returncode, 0, "iotauthctl %s: %s %s" % (args, p.stdout, p.stderr))
        return p

    def authenticate(self, req, channel=None):
        return h.to_dict(h.call(channel or self.gateway, AUTH, req))

    def wait_for(self, pred, timeout=1.0, what=""):
        """Polls pred() until true; fails if it takes longer than `timeout`."""
        start = time.time()
        while True:
            if pred():
                return time.time() - start
            if time.time() - start > timeout:
                self.fail("not within %.1fs: %s" % (timeout, what))
            time.sleep(0.02)

    def test_1_sas_lifecycle_with_cli(self):
        self.ctl("tenant", "create", "acme", "--hub_host", HUB)
        self.ctl("product", "create", "pk-sas", "--tenant", "acme", "--credential_types", "sas",
                 "--rule", "allow:publish:devices/${device}/#")
        out = self.ctl("device", "create", "sensor-1", "--tenant", "acme", "--product", "pk-sas",
                       "--show_keys", "--json").stdout
        dev = json.loads(out)
        primary = dev["credentials"]["symmetric_key"]["primary_key"] if "symmetric_key" in dev.get(
            "credentials", {}) else dev["credentials"]["symmetricKey"]["primaryKey"]
        expiry = int(time.time()) + 3600
        token = sas_token(HUB, "sensor-1", primary, expiry)
        # The mirror picks up the new device within a second.
        self.wait_for(lambda: self.authenticate(connect_sas("sensor-1", token))["decision"] == "DECISION_ALLOW",
                      what="new device authenticates")
        resp = self.authenticate(connect_sas("sensor-1", token))
        self.assertEqual(resp["identity"], {"tenant_id": "acme", "product_key": "pk-sas", "device_id": "sensor-1"})
        self.assertEqual(resp["credential_type"], "CREDENTIAL_TYPE_SAS")
        self.assertTrue(resp["access_rules"])
        self.assertIn("cache_ttl", resp)
        # The same call through buf curl (a second independent client).
        r = h.buf_curl(self.server, AUTH, data=connect_sas("sensor-1", token), role="gateway")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["decision"], "DECISION_ALLOW")
        # Tampered token: denied with a stable reason.
        bad = token.replace("se=%d" % expiry, "se=%d" % (expiry + 1))
        resp = self.authenticate(connect_sas("sensor-1", bad))
        self.assertEqual((resp["decision"], resp["deny_reason"]), ("DECISION_DENY", "DENY_REASON_BAD_SIGNATURE"))
        # A resource that decodes to a byte no device id has (and not UTF-8): a deny this
        # client can parse (the id once went into the response's identity as it was).
        odd_sr = urllib.parse.quote("%s/devices/sensor-" % HUB, safe="") + "%F1"
        odd_sig = urllib.parse.quote(base64.b64encode(b"s" * 32).decode(), safe="")
        odd = "SharedAccessSignature sr=%s&sig=%s&se=%d" % (odd_sr, odd_sig, expiry)
        resp = self.authenticate(connect_sas("sensor-1", odd))
        self.assertEqual((resp["decision"], resp["deny_reason"]), ("DECISION_DENY", "DENY_REASON_WRONG_AUDIENCE"))
        # Regenerate the primary key: the old token is denied within a second.
        self.ctl("device", "regenerate-key", "sensor-1", "--tenant", "acme", "--slot", "primary")
        took = self.wait_for(lambda: self.authenticate(connect_sas("sensor-1", token))["decision"] == "DECISION_DENY",
                             what="old token denied after regenerate-key")
        print("regenerate-key took effect in %.3fs" % took)
        # Disable: a fresh valid token is denied within a second.
        dev = json.loads(self.ctl("device", "get", "sensor-1", "--tenant", "acme", "--show_keys", "--json").stdout)
        creds = dev["credentials"]
        key = (creds.get("symmetric_key") or creds.get("symmetricKey"))
        key = key.get("primary_key") or key.get("primaryKey")
        token2 = sas_token(HUB, "sensor-1", key, expiry)
        self.wait_for(lambda: self.authenticate(connect_sas("sensor-1", token2))["decision"] == "DECISION_ALLOW",
                      what="new key authenticates")
        self.ctl("device", "disable", "sensor-1", "--tenant", "acme")
        took = self.wait_for(
            lambda: self.authenticate(connect_sas("sensor-1", token2)).get("deny_reason") == "DENY_REASON_DEVICE_DISABLED",
            what="disabled device denied")
        print("disable took effect in %.3fs" % took)
        # The CLI's authenticate exits 4 on a deny.
        p = self.ctl("--cert", self.server.pki("gateway.pem"), "--key", self.server.pki("gateway.key"),
                     "authenticate", "--client_id", "sensor-1", "--sas_token", token2, check=False)
        self.assertEqual(p.returncode, 4, p.stdout + p.stderr)

    def test_2_device_triple(self):
        h.call(self.admin, REG + "CreateTenant", {"tenant": {"id": "ali", "hub_host": "ali.example.net"}})
        h.call(self.admin, REG + "CreateProduct", {"product": {
            "tenant_id": "ali", "product_key": "a14Xib5kdYd",
            "allowed_credential_types": ["CREDENTIAL_TYPE_DEVICE_TRIPLE"]}})
        secret = "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq"
        # The device secret of a triple is the primary key's text (valid base64).
        key_b64 = secret
        h.call(self.admin, REG + "CreateDevice", {"device": {
            "tenant_id": "ali", "device_id": "light1983432", "product_key": "a14Xib5kdYd",
            "status": "DEVICE_STATUS_ENABLED",
            "credentials": {"symmetric_key": {"primary_key": key_b64, "secondary_key": key_b64}}}})
        ts = int(time.time() * 1000)
        req = {"connect": triple_connect("a14Xib5kdYd", "light1983432", secret, "SN1928339", ts)}
        self.wait_for(lambda: self.authenticate(req)["decision"] == "DECISION_ALLOW", what="triple allow")
        # The same (device, timestamp, signature) again: a replay.
        self.assertEqual(self.authenticate(req).get("deny_reason"), "DENY_REASON_REPLAYED")
        wrong = {"connect": triple_connect("a14Xib5kdYd", "light1983432", "wrong-secret-wrong-secret-123456",
                                           "SN1928339", ts + 1)}
        self.assertEqual(self.authenticate(wrong).get("deny_reason"), "DENY_REASON_BAD_SIGNATURE")
        old = {"connect": triple_connect("a14Xib5kdYd", "light1983432", secret, "SN1928339", ts - 3600 * 1000)}
        self.assertEqual(self.authenticate(old).get("deny_reason"), "DENY_REASON_TIMESTAMP_OUT_OF_WINDOW")
        # hmacsha1 is refused unless the product enables weak methods.
        weak = {"connect": triple_connect("a14Xib5kdYd", "light1983432", secret, "SN1928339", ts + 2, "hmacsha1")}
        self.assertEqual(self.authenticate(weak)["decision"], "DECISION_DENY")
        # The failures above are tracked by the brute-force limiters, read at scrape time.
        text = self.server.metrics()
        self.assertEqual(h.promtool_check(text).returncode, 0, h.promtool_check(text).stdout)
        self.assertGreaterEqual(h.metric_value(text, "iotauth_identity_limiter_tracked_keys", limiter="device"), 1)
        # (These connects carry no peer address: only the device limiter counts them.)
        self.assertIsNotNone(h.metric_value(text, "iotauth_identity_limiter_tracked_keys", limiter="source"))
        self.assertEqual(h.metric_value(text, "iotauth_identity_limiter_evictions_total", limiter="device"), 0)
        # The registry mirror's counters: changes applied, nothing refused as unreadable.
        self.assertGreaterEqual(h.metric_value(text, "iotauth_registry_mirror_applied_changes_total"), 1)
        self.assertEqual(h.metric_value(text, "iotauth_registry_mirror_failed_closed_total"), 0)
        self.assertEqual(h.metric_value(text, "iotauth_registry_mirror_malformed_records_total"), 0)
        self.assertIsNotNone(h.metric_value(text, "iotauth_registry_mirror_silent_streams_total"))
        # Every decision is counted by outcome, deny reason and credential type.
        decisions = functools.partial(h.metric_value, text, "iotauth_identity_decisions_total")
        self.assertGreaterEqual(decisions(decision="allow", reason="none", credential_type="device_triple"), 1)
        self.assertEqual(decisions(decision="deny", reason="replayed", credential_type="device_triple"), 1)
        self.assertEqual(decisions(decision="deny", reason="timestamp_out_of_window",
                                   credential_type="device_triple"), 1)
        self.assertGreaterEqual(decisions(decision="deny", reason="bad_signature"), 1)
        self.assertEqual(decisions(decision="deny", reason="internal"), 0)
        # A series nothing has counted yet is there, at zero (a rate over it sees its first rise).
        self.assertEqual(decisions(decision="deny", reason="revoked", credential_type="x509_ca"), 0)
        # Every metric the shipped alerting rules and dashboard read is one this server
        # exports (the ExHook table's only when the ExHook adapter is on).
        exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
        for path in ("k8s/prometheus/iotauth-rules.yaml", "k8s/grafana/iotauth-dashboard.json"):
            with open(h.runfile(path)) as f:
                names = set(re.findall(r"\b((?:iotauth|grpc_server)_[a-z_]+)", f.read()))
            self.assertIn("iotauth_identity_decisions_total", names)
            # (A histogram's own name, in a description, is exported as its _bucket.)
            missing = sorted(n for n in names if n not in exported and n + "_bucket" not in exported
                             and not n.startswith("iotauth_exhook_"))
            self.assertEqual(missing, [], "%s names metrics the server does not export" % path)

    def test_3_malformed_request_is_invalid_argument(self):
        with self.assertRaises(grpc.RpcError) as e:
            h.call(self.gateway, AUTH, {"connect": {"client_id": "x" * 5000, "password": "cA=="}})
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("client_id", e.exception.details())
        self.assertEqual(h.error_reason(e.exception), "INVALID_CLIENT_ID")
        # A registry rejection carries its stable reason in the error's details
        # (google.rpc.ErrorInfo), for python grpcio and buf curl alike.
        bad = {"device": {"tenant_id": "no-such-tenant", "device_id": "has space"}}
        with self.assertRaises(grpc.RpcError) as e:
            h.call(self.admin, REG + "CreateDevice", bad)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(h.error_reason(e.exception), "INVALID_DEVICE_ID")
        r = h.buf_curl(self.server, REG + "CreateDevice", data=bad)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        details = json.loads(r.stderr)["details"]
        self.assertEqual([d["type"] for d in details], ["google.rpc.ErrorInfo"], r.stderr)
        value = details[0]["value"]
        info = h.schema().cls("google.rpc.ErrorInfo").FromString(
            base64.b64decode(value + "=" * (-len(value) % 4)))
        self.assertEqual((info.reason, info.domain), ("INVALID_DEVICE_ID", "iotauth.dev"))
        # Authenticate is metered: each call counted exactly once, under its status code.
        labels = dict(grpc_service="iotauth.identity.v1.IdentityService", grpc_method="Authenticate",
                      grpc_type="unary")
        before = h.metric_value(self.server.metrics(), "grpc_server_handled_total",
                                grpc_code="INVALID_ARGUMENT", **labels) or 0
        for _ in range(3):
            with self.assertRaises(grpc.RpcError):
                h.call(self.gateway, AUTH, {"connect": {"client_id": "x" * 5000, "password": "cA=="}})
        text = self.server.metrics()
        self.assertEqual(h.metric_value(text, "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT",
                                        **labels), before + 3)
        self.assertGreaterEqual(h.metric_value(text, "grpc_server_started_total", **labels), before + 3)

    def test_4_audit_watch_and_query(self):
        h.call(self.admin, REG + "CreateTenant", {"tenant": {"id": "aud", "hub_host": "aud.example.net"}})
        got = []
        watch = h.server_stream(self.server.channel("reader"), "iotauth.audit.v1.AuditLog/Watch",
                                {"from_now": True, "tenant_id": "aud"}, timeout=30)

        def reader():
            try:
                for ev in watch:
                    got.append((time.time(), h.to_dict(ev)))
            except grpc.RpcError:
                pass
        # The headers come once the server has fixed the stream's start at the
        # head: anything recorded from here on is delivered.
        headers = dict(watch.initial_metadata())
        self.assertIn("iotauth-watch-cursor", headers)
        t = threading.Thread(target=reader)
        t.start()
        sent = time.time()
        req = {"tenant_id": "aud", "request_id": "req-watch-1",
               "connect": {"client_id": "ghost", "username": "aud.example.net/ghost/?api-version=2021-04-12",
                           "password": base64.b64encode(sas_token("aud.example.net", "ghost", "cGFzc3dvcmQ=",
                                                                  int(time.time()) + 60).encode()).decode()}}
        self.assertEqual(self.authenticate(req)["decision"], "DECISION_DENY")
        self.wait_for(lambda: any(e[1].get("request_id") == "req-watch-1" for e in got), timeout=1.0,
                      what="authentication event on Watch")
        watch.cancel()
        t.join()
        ev = [e for e in got if e[1].get("request_id") == "req-watch-1"][0]
        print("audit event on Watch after %.3fs" % (ev[0] - sent))
        self.assertEqual(ev[1]["type"], "EVENT_TYPE_AUTHENTICATION")
        self.assertEqual(ev[1]["outcome"], "OUTCOME_DENY")
        self.assertTrue(ev[1]["hash"])
        resp = h.to_dict(h.call(self.server.channel("reader"), "iotauth.audit.v1.AuditLog/Query",
                                {"tenant_id": "aud", "type": "EVENT_TYPE_AUTHENTICATION"}))
        self.assertIn("req-watch-1", [e.get("request_id") for e in resp["events"]])
        # The chain verifies, through the CLI.
        p = self.ctl("audit", "verify")
        self.assertIn("ok", p.stdout.lower())
        # A checkpoint kept outside the server: the log must still hold it.
        line = self.ctl("audit", "checkpoint", "--create").stdout.strip()
        self.assertRegex(line, r"^[0-9]+:[0-9a-f]{64}$")
        p = self.ctl("audit", "verify", "--expect", line)
        self.assertIn("matches the expected checkpoint", p.stdout)
        seq, digest = line.split(":")
        forged = "%s:%s%s" % (seq, "1" if digest[0] == "0" else "0", digest[1:])
        p = self.ctl("audit", "verify", "--expect", forged, check=False)
        self.assertEqual(p.returncode, 5, p.stdout + p.stderr)
        self.assertIn("CHECKPOINT_MISMATCH", p.stdout)
        p = self.ctl("audit", "verify", "--expect", "%d:%s" % (int(seq) + 10**6, digest), check=False)
        self.assertEqual(p.returncode, 5, p.stdout + p.stderr)
        self.assertIn("MISSING", p.stdout)
        p = self.ctl("audit", "verify", "--expect", "nonsense", check=False)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)

    def test_5_no_secret_anywhere(self):
        """Plants known keys, tokens and passwords in requests; none may appear in
        the database files, the process log, the metrics or the audit log."""
        planted_key = base64.b64encode(b"PLANTED-KEY-0123456789abcdefXYZ!").decode()
        planted_secret = "PlantedTripleSecret7f3a9c1e5b2d0"
        planted_policy = base64.b64encode(b"PLANTED-POLICY-KEY-0123456789ab").decode()
        h.call(self.admin, REG + "CreateTenant", {"tenant": {"id": "sec", "hub_host": "sec.example.net",
                                                             "policies": [{"name": "svc", "primary_key": planted_policy,
                                                                           "secondary_key": planted_policy}]}})
        h.call(self.admin, REG + "CreateProduct", {"product": {
            "tenant_id": "sec", "product_key": "pk-sec",
            "allowed_credential_types": ["CREDENTIAL_TYPE_SAS", "CREDENTIAL_TYPE_DEVICE_TRIPLE"]}})
        h.call(self.admin, REG + "CreateDevice", {"device": {
            "tenant_id": "sec", "device_id": "dev-sec", "product_key": "pk-sec", "status": "DEVICE_STATUS_ENABLED",
            "credentials": {"symmetric_key": {"primary_key": planted_key, "secondary_key": planted_key}}}})
        h.call(self.admin, REG + "CreateDevice", {"device": {
            "tenant_id": "sec", "device_id": "dev-sec2", "product_key": "pk-sec", "status": "DEVICE_STATUS_ENABLED",
            "credentials": {"symmetric_key": {"primary_key": planted_secret, "secondary_key": planted_secret}}}})
        token = sas_token("sec.example.net", "dev-sec", planted_key, int(time.time()) + 600)
        sig = urllib.parse.unquote(token.split("sig=")[1].split("&")[0])
        self.wait_for(lambda: self.authenticate(connect_sas_hub("sec.example.net", "dev-sec", token))["decision"]
                      == "DECISION_ALLOW", what="planted device allow")
        bad_pw = "PlantedWrongPassword-abc123"
        self.authenticate({"connect": {"client_id": "dev-sec", "username": "u",
                                       "password": base64.b64encode(bad_pw.encode()).decode()}})
        # dev-sec2 was created after dev-sec: wait for the mirror to have it too. Each
        # attempt signs a fresh timestamp (a repeated one would be refused as a replay).
        trips = []

        def triple_allowed():
            ts = int(time.time() * 1000) + len(trips)
            trips.append(triple_connect("pk-sec", "dev-sec2", planted_secret, "c1", ts))
            return self.authenticate({"connect": trips[-1]})["decision"] == "DECISION_ALLOW"
        self.wait_for(triple_allowed, what="planted triple device allow")
        trip_pw = base64.b64decode(trips[-1]["password"]).decode()
        time.sleep(0.5)  # let the audit writer commit
        needles = {"device key": planted_key, "raw key": "PLANTED-KEY-0123456789", "policy key": planted_policy,
                   "triple secret": planted_secret, "sas token": token, "sas signature": sig,
                   "wrong password": bad_pw, "triple signature": trip_pw}
        haystacks = {"server log": self.server.log().encode(), "metrics": self.server.metrics().encode()}
        for name in os.listdir(self.server.data_dir):
            p = os.path.join(self.server.data_dir, name)
            if os.path.isfile(p) and (".db" in name):
                with open(p, "rb") as f:
                    haystacks[name] = f.read()
        exported = self.ctl("audit", "export")
        export = exported.stdout.encode()
        self.assertRegex(exported.stderr, r"\d+ rows .* rows/s")  # progress: stdout is a pipe
        haystacks["audit export"] = export
        self.assertIn(b"dev-sec", export)
        for hname, hay in haystacks.items():
            for nname, needle in needles.items():
                self.assertNotIn(needle.encode(), hay, "%s found in %s" % (nname, hname))
                # base64 of a raw secret is the stored form in requests; check raw too.
        self.assertGreater(len(haystacks), 3)


def connect_sas_hub(hub, device, token):
    return {"connect": {"client_id": device, "username": "%s/%s/?api-version=2021-04-12" % (hub, device),
                        "password": base64.b64encode(token.encode()).decode()}}


def decide_9000(server):
    """9,000 audited decisions (denies), in batches of 1,000."""
    batch = {"requests": [{"connect": {"client_id": "nobody-%d" % i, "username": "x",
                                       "password": base64.b64encode(b"not a token").decode()}}
                          for i in range(1000)]}
    gateway = server.channel("gateway")
    for _ in range(9):
        h.call(gateway, "iotauth.identity.v1.IdentityService/AuthenticateBatch", batch)


def first_retained_after(reader, above, timeout=10):
    """The oldest event's sequence once it passes `above` (retention ran), or
    what it is when `timeout` runs out."""
    deadline = time.time() + timeout
    first = 0
    while time.time() < deadline:
        events = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Query",
                                  {"page_size": 1})).get("events", [])
        first = int(events[0]["sequence"]) if events else 0
        if first > above:
            break
        time.sleep(0.2)
    return first


class RetentionTest(unittest.TestCase):
    def test_retention_by_count_keeps_the_rest_verifiable(self):
        # The SQLite backend prunes event by event.
        server = h.Server(args=["--set=storage.audit_backend=sqlite",
                                "--set=audit.retention_max_events=25",
                                "--set=audit.retention_interval=1s"]).start()
        try:
            admin, reader = server.channel("admin"), server.channel("reader")
            h.call(admin, REG + "CreateTenant", {"tenant": {"id": "ret", "hub_host": "ret.example.net"}})
            for i in range(60):  # 61 audited mutations
                h.call(admin, REG + "UpdateTenant", {"tenant": {"id": "ret", "display_name": "r%d" % i},
                                                     "update_mask": "displayName"})
            deadline = time.time() + 5
            events = []
            while time.time() < deadline:
                events = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Query",
                                          {"page_size": 1000})).get("events", [])
                if len(events) <= 26:
                    break
                time.sleep(0.2)
            # 25 events, then the record of the cut, committed before the prune.
            self.assertLessEqual(len(events), 26, "retention did not prune within 5 s")
            self.assertGreater(int(events[0]["sequence"]), 1)
            record = events[-1]
            self.assertEqual(record["type"], "EVENT_TYPE_RETENTION", record)
            cut = int(record["attributes"]["pruned_through"])
            self.assertEqual(cut + 1, int(events[0]["sequence"]))
            self.assertEqual(record["attributes"]["pruned_through_hash"], events[0]["prev_hash"])
            v = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Verify", {}))
            self.assertTrue(v.get("ok"), v)
            # The gauge is the database and its WAL as they stand on disk.
            on_disk = sum(os.path.getsize(p) for p in glob.glob(os.path.join(server.data_dir, "audit.db*"))
                          if not p.endswith(("-shm", ".lock")))
            size = h.metric_value(server.metrics(), "iotauth_audit_log_bytes")
            self.assertGreater(size, 0)
            self.assertLessEqual(size, on_disk)
        finally:
            self.assertEqual(server.stop(), 0)


    def test_segment_log_prunes_whole_segments(self):
        # The default backend: segments of 4096 events; keeping 4096 events prunes
        # the first segment once the log passes 8192.
        server = h.Server(args=["--set=storage.audit_segment_events=4096",
                                "--set=audit.retention_max_events=4096",
                                "--set=audit.retention_interval=1s"]).start()
        try:
            reader = server.channel("reader")
            decide_9000(server)
            first = first_retained_after(reader, 1)
            self.assertEqual(first, 4097, "the first segment (events 1-4096) was not pruned")
            files = sorted(os.listdir(os.path.join(server.data_dir, "audit")))
            self.assertNotIn("%020d.seg" % 1, files)
            self.assertIn("%020d.seg" % 4097, files)
            self.assertIn("anchor", files)
            v = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Verify", {}))
            self.assertTrue(v.get("ok"), v)
            self.assertEqual(int(v.get("anchorSequence", v.get("anchor_sequence", 0))), 4096, v)
            # The cut is on record; removing the next segment by hand, with an anchor
            # forged to match, is not taken for retention.
            recs = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Query",
                                    {"type": "EVENT_TYPE_RETENTION"})).get("events", [])
            self.assertEqual([r["attributes"]["pruned_through"] for r in recs], ["4096"], recs)
            watch = h.server_stream(reader, "iotauth.audit.v1.AuditLog/Watch",
                                    {"after_sequence": 8192}, timeout=10)
            after = h.to_dict(next(iter(watch)))
            watch.cancel()
            self.assertEqual(int(after["sequence"]), 8193)
        finally:
            self.assertEqual(server.stop(), 0)
        # Remove the second segment by hand, server down, with an anchor forged to
        # match (IOTAANC1, sequence, hash, time, SHA-256 of those): the chain from
        # 8193 on is intact, but no retention record names 8192.
        audit_dir = os.path.join(server.data_dir, "audit")
        for name in ("%020d.seg" % 4097, "%020d.idx" % 4097):
            if os.path.exists(os.path.join(audit_dir, name)):
                os.remove(os.path.join(audit_dir, name))
        body = (b"IOTAANC1" + (8192).to_bytes(8, "big") + bytes.fromhex(after["prev_hash"]) +
                time.time_ns().to_bytes(8, "big"))
        with open(os.path.join(audit_dir, "anchor"), "wb") as f:
            f.write(body + hashlib.sha256(body).digest())
        server = h.Server(data_dir=server.data_dir,
                          args=["--set=storage.audit_segment_events=4096"]).start()
        try:
            v = h.to_dict(h.call(server.channel("reader"), "iotauth.audit.v1.AuditLog/Verify", {}))
            self.assertFalse(v.get("ok"), v)
            self.assertEqual(v.get("problem"), "MISSING", v)
            self.assertEqual(int(v.get("first_bad_sequence", 0)), 4097, v)
            self.assertIn("no retention record names that cut", v.get("detail", ""), v)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_segment_log_prunes_by_size(self):
        # A byte budget smaller than a segment: every sealed segment goes, the
        # active one stays.
        server = h.Server(args=["--set=storage.audit_segment_events=4096",
                                "--set=audit.retention_max_bytes=100000",
                                "--set=audit.retention_interval=1s"]).start()
        try:
            reader = server.channel("reader")
            decide_9000(server)  # segments 1-4096 and 4097-8192 sealed
            first = first_retained_after(reader, 4097)
            self.assertEqual(first, 8193, "the two sealed segments were not pruned")
            size = h.metric_value(server.metrics(), "iotauth_audit_log_bytes")
            self.assertGreater(size or 0, 0)
            self.assertLess(size, 4096 * 250, "the gauge counts more than the active segment")
            files = sorted(os.listdir(os.path.join(server.data_dir, "audit")))
            self.assertEqual([f for f in files if f.endswith(".seg")], ["%020d.seg" % 8193], files)
            recs = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Query",
                                    {"type": "EVENT_TYPE_RETENTION"})).get("events", [])
            self.assertEqual(recs[-1]["attributes"]["pruned_through"], "8192", recs)
            self.assertEqual(recs[-1]["attributes"]["max_bytes"], "100000", recs)
            v = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Verify", {}))
            self.assertTrue(v.get("ok"), v)
        finally:
            self.assertEqual(server.stop(), 0)


def cut_audit_log_from(data_dir, sequence):
    """Zeroes the active segment from the frame of event `sequence` on, the way a
    tail cut off while the service is down looks (frames: u32 length, kind, body;
    an event body is its 32-byte hash, then the canonical encoding with the
    sequence at offset 8)."""
    audit = os.path.join(data_dir, "audit")
    seg = os.path.join(audit, sorted(f for f in os.listdir(audit) if f.endswith(".seg"))[-1])
    with open(seg, "r+b") as f:
        data = bytearray(f.read())
        at = 16
        while at + 5 <= len(data) and any(data[at:at + 5]):
            length, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4]
            if kind == ord("E"):
                seq = int.from_bytes(data[at + 5 + 32 + 8:at + 5 + 32 + 16], "big")
                if seq >= sequence:
                    f.seek(at)
                    f.write(bytes(len(data) - at))
                    return
            at += 5 + length
    raise AssertionError("event %d not found in %s" % (sequence, seg))


class OutsideCheckpointTest(unittest.TestCase):
    def test_a_tail_cut_while_down_fails_against_the_kept_checkpoint(self):
        server = h.Server().start()
        ctl = [h.runfile("clients/iotauthctl/iotauthctl"), "--data_dir", server.data_dir]

        def run(*args, check=True):
            p = subprocess.run(ctl + ["--address", server.address] + list(args),
                               capture_output=True, text=True, timeout=60)
            if check:
                self.assertEqual(p.returncode, 0, "%s: %s %s" % (args, p.stdout, p.stderr))
            return p
        try:
            admin = server.channel("admin")
            for i in range(6):  # audited mutations
                h.call(admin, REG + "CreateTenant", {"tenant": {"id": "oc%d" % i, "hub_host": "oc%d.example.net" % i}})
            time.sleep(0.1)
            kept = run("audit", "checkpoint", "--create").stdout.strip()
            seq = int(kept.split(":")[0])
            self.assertGreaterEqual(seq, 3, kept)
            self.assertIn("matches the expected checkpoint", run("audit", "verify", "--expect", kept).stdout)
            self.assertEqual(server.stop(), 0, server.log())
            cut_audit_log_from(server.data_dir, seq - 1)
            server = h.Server(data_dir=server.data_dir).start()
            # The chain alone cannot tell: what is left still links up.
            self.assertIn("ok", run("audit", "verify").stdout)
            p = run("audit", "verify", "--expect", kept, check=False)
            self.assertEqual(p.returncode, 5, p.stdout + p.stderr)
            # MISSING while the log ends before the kept event; once the restarted
            # server has written events that reuse its sequence, CHECKPOINT_MISMATCH.
            self.assertRegex(p.stdout, r"FAILED at sequence %d: MISSING|FAILED at sequence %d: CHECKPOINT_MISMATCH"
                             % (seq - 1, seq))
        finally:
            self.assertEqual(server.stop(), 0, server.log())


class AuditOutageTest(unittest.TestCase):
    """The audit log's volume refuses writes (a file size limit put on the running
    server: its writes fail with EFBIG, as on a full volume): the server keeps
    answering, reports NOT_SERVING and iotauth_audit_writable 0 from the first
    refused write, then SERVING again once writes succeed, with the loss recorded as
    a GAP event in a log that verifies."""

    def health(self, server):
        p = subprocess.run([h.runfile("clients/iotauthctl/iotauthctl"), "--address", server.address,
                            "--data_dir", server.data_dir, "health"],
                           capture_output=True, text=True, timeout=60)
        if p.stdout.strip() == "NOT_SERVING":
            self.assertEqual(p.returncode, 5)
            self.assertIn("iotauth_audit_writable", p.stderr)  # the hint names the causes
        return p.stdout.strip() or p.stderr.strip()

    def wait_until(self, pred, what, timeout=30):
        deadline = time.time() + timeout
        while not pred():
            if time.time() > deadline:
                self.fail("not within %ds: %s" % (timeout, what))
            time.sleep(0.1)

    def test_health_follows_the_audit_log(self):
        self.outage("not_serving")

    def test_serve_keeps_serving(self):
        self.outage("serve")

    def test_refuse_refuses_what_it_cannot_record(self):
        self.outage("refuse")

    def outage(self, when_unwritable):
        import resource
        unwritable_health = "SERVING" if when_unwritable == "serve" else "NOT_SERVING"
        server = h.Server(args=["--set=audit.when_unwritable=" + when_unwritable],
                          log_through_pipe=True).start()
        try:
            admin, gateway = server.channel("admin"), server.channel("gateway")
            h.call(admin, REG + "CreateTenant", {"tenant": {"id": "out", "hub_host": "out.example.net"}})
            self.assertEqual(self.health(server), "SERVING")
            self.assertEqual(h.metric_value(server.metrics(), "iotauth_audit_writable"), 1)

            def deny(i):
                token = sas_token("out.example.net", "ghost", "cGFzc3dvcmQ=", int(time.time()) + 60)
                resp = h.to_dict(h.call(gateway, AUTH, {"tenant_id": "out", "request_id": "outage-%d" % i,
                                                        **connect_sas_hub("out.example.net", "ghost", token)}))
                self.assertEqual(resp["decision"], "DECISION_DENY")

            def refused(ch, method, request):
                with self.assertRaises(grpc.RpcError) as cm:
                    h.call(ch, method, request)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, cm.exception.details())
                self.assertIn("audit.when_unwritable=refuse", cm.exception.details())
                # The stable reason tells "up but refusing" from "unreachable".
                self.assertEqual(h.error_reason(cm.exception), "AUDIT_UNWRITABLE")

            limit = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (1, limit[1]))
            limited = time.time()
            try:
                lost = 0
                deadline = time.time() + 30
                while True:
                    metrics = server.metrics()
                    if h.metric_value(metrics, "iotauth_audit_writable") == 0:
                        # Reported at the first refused write, before its retries run
                        # out: nothing is lost yet (refuse closes its gate now).
                        self.assertEqual(
                            h.metric_value(metrics, "iotauth_audit_events_dropped_total"), 0)
                        break
                    self.assertLess(time.time(), deadline, "the audit log was not reported unwritable")
                    try:
                        deny(lost)  # answered until the loss is reported
                    except grpc.RpcError as e:
                        # Only refuse refuses, and only once the loss is reported (the
                        # gauge is read after the call).
                        self.assertEqual(when_unwritable, "refuse", e)
                        self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e.details())
                        break
                    lost += 1
                    time.sleep(0.05)
                reported = time.time() - limited
                self.wait_until(lambda: self.health(server) == unwritable_health, unwritable_health)
                if when_unwritable == "refuse":
                    # Nothing that would be audited is done: no decision, no change.
                    refused(gateway, AUTH, {"tenant_id": "out", "request_id": "refused",
                                            **connect_sas_hub("out.example.net", "ghost", "x")})
                    refused(admin, REG + "CreateTenant",
                            {"tenant": {"id": "out2", "hub_host": "out2.example.net"}})
                    # Reads that are not audited are still answered.
                    tenants = h.to_dict(h.call(server.channel("reader"), REG + "ListTenants", {}))
                    self.assertEqual([t["id"] for t in tenants["tenants"]], ["out"])
                    self.assertGreaterEqual(
                        h.metric_value(server.metrics(), "iotauth_audit_refused_calls_total"), 2)
                else:
                    deny(lost)
                    lost += 1
                self.assertIn("audit: events cannot be recorded", server.log())
                # Reported at the first refused write; the events are lost only once
                # their retries are refused too. Held until then, so that the loss and
                # its GAP are seen (lifted sooner, the retries get them through).
                self.wait_until(lambda: h.metric_value(
                    server.metrics(), "iotauth_audit_events_dropped_total") >= 1,
                    "the refused batch given up after its retries")
            finally:
                resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, limit)
            lifted = time.time()
            self.wait_until(lambda: h.metric_value(server.metrics(), "iotauth_audit_writable") == 1,
                            "the audit log writable again")
            print("unwritable reported %.2fs after the limit; writable again %.2fs after it was lifted"
                  % (reported, time.time() - lifted))
            self.assertEqual(self.health(server), "SERVING")
            self.assertIn("audit: events get through again", server.log())
            deny(lost)  # recorded again
            reader = server.channel("reader")
            self.wait_until(lambda: any(
                e.get("request_id") == "outage-%d" % lost for e in h.to_dict(h.call(
                    reader, "iotauth.audit.v1.AuditLog/Query", {"tenant_id": "out"})).get("events", [])),
                "the event after the outage in the log")
            events = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Query",
                                      {"type": "EVENT_TYPE_GAP"})).get("events", [])
            self.assertEqual(len(events), 1, events)
            dropped = int(events[0]["attributes"]["dropped_count"])
            print("%d decisions made while the audit log refused writes; the GAP counts %d"
                  % (lost, dropped))
            # Events still queued when writes came back are committed, not lost.
            self.assertGreaterEqual(dropped, 1)
            v = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Verify", {}))
            self.assertTrue(v.get("ok"), v)
        finally:
            self.assertEqual(server.stop(), 0, server.log())


class DurabilityTest(unittest.TestCase):
    def test_acknowledged_writes_survive_kill_9(self):
        server = h.Server().start()
        ch = server.channel("admin")
        h.call(ch, REG + "CreateTenant", {"tenant": {"id": "dur", "hub_host": "dur.example.net"}})
        h.call(ch, REG + "CreateProduct", {"product": {"tenant_id": "dur", "product_key": "pk-dur",
                                                       "allowed_credential_types": ["CREDENTIAL_TYPE_SAS"]}})
        acked = []
        stop = threading.Event()

        def writer():
            i = 0
            while not stop.is_set():
                try:
                    h.call(ch, REG + "CreateDevice", {"device": {"tenant_id": "dur", "device_id": "d-%05d" % i,
                                                                 "product_key": "pk-dur"}, "generate_keys": True},
                           timeout=5)
                    acked.append("d-%05d" % i)
                except grpc.RpcError:
                    return
                i += 1
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(1.5)
        server.kill9()
        stop.set()
        t.join()
        self.assertGreater(len(acked), 10)
        again = h.Server(data_dir=server.data_dir).start()
        try:
            ch2 = again.channel("admin")
            for dev in acked:
                resp = h.to_dict(h.call(ch2, REG + "GetDevice", {"tenant_id": "dur", "device_id": dev}))
                self.assertEqual(resp["device_id"], dev)
            print("%d acknowledged writes survived kill -9" % len(acked))
        finally:
            self.assertEqual(again.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
