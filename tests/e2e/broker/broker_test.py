"""Brokers end to end: Debian's mosquitto with a TLS listener that requires client
certificates and the iotauth plugin (//clients/mosquitto:libiotauth_mosquitto.so)
loaded, the real all-in-one iotauthd, and Debian's python3-paho-mqtt as the devices.
Devices are registered through the registry gRPC API; SAS tokens and device-triple
signatures are computed here with Python's hmac, independently of the project's code.
The test PKI (broker, device CAs, device certificates) is made at test time with the
openssl CLI.

  (a) SAS token as password: connected; tampered token: refused.
  (b) device-triple HMAC: connected; wrong secret: refused.
  (c) client certificate from a registered, verified CA: connected; from an
      unregistered CA: refused; revoked: refused (skipped while iotauthd has no X.509
      verifier wired).
  (d) publish and subscribe on the device's own topics: delivered; on another
      device's topics: refused.
"""

import base64
import getpass
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

import grpc
import paho.mqtt.client as mqtt

import iotauth_harness as h

HUB = "hub.broker.example.net"
TENANT = "brokers"
PRODUCT = "pk-broker"
REG = "iotauth.registry.v1.DeviceRegistry/"
AUTH = "iotauth.identity.v1.IdentityService/Authenticate"
MOSQUITTO = "/usr/sbin/mosquitto"


def sas_token(hub, device, key_b64, expiry):
    sr = urllib.parse.quote("%s/devices/%s" % (hub, device), safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key_b64), ("%s\n%d" % (sr, expiry)).encode(),
                                    hashlib.sha256).digest()).decode()
    return "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, urllib.parse.quote(sig, safe=""), expiry)


def register_sas_device(admin, device_id):
    """The tenant, a SAS-only product and one enabled device with a random key, on a
    fresh server, through an `admin` channel. Returns the key."""
    h.call(admin, REG + "CreateTenant", {"tenant": {"id": TENANT, "hub_host": HUB}})
    h.call(admin, REG + "CreateProduct", {"product": {
        "tenant_id": TENANT, "product_key": PRODUCT,
        "allowed_credential_types": ["CREDENTIAL_TYPE_SAS"]}})
    key = base64.b64encode(os.urandom(32)).decode()
    h.call(admin, REG + "CreateDevice", {"device": {
        "tenant_id": TENANT, "device_id": device_id, "product_key": PRODUCT,
        "status": "DEVICE_STATUS_ENABLED",
        "credentials": {"symmetric_key": {"primary_key": key, "secondary_key": key}}}})
    return key


def triple(product_key, device, secret, client_id, ts_ms):
    content = "clientId%sdeviceName%sproductKey%stimestamp%d" % (client_id, device, product_key, ts_ms)
    pw = hmac.new(secret.encode(), content.encode(), hashlib.sha256).hexdigest()
    return ("%s|securemode=2,signmethod=hmacsha256,timestamp=%d|" % (client_id, ts_ms),
            "%s&%s" % (device, product_key), pw)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Pki:
    """CAs and certificates made with the openssl CLI in a temporary directory."""

    def __init__(self, d):
        self.d = d
        for ca in ("broker-ca", "devices-ca", "unreg-ca"):
            self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2", "-subj", "/CN=" + ca,
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.leaf("broker", "broker-ca", "localhost", server=True)
        with open(self.path("client-cas.pem"), "w") as out:
            for ca in ("devices-ca", "unreg-ca"):
                with open(self.path(ca + ".pem")) as f:
                    out.write(f.read())

    def _run(self, *args):
        p = subprocess.run(["openssl"] + list(args), cwd=self.d, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("openssl %s: %s" % (args[0], p.stderr))

    def path(self, name):
        return os.path.join(self.d, name)

    def leaf(self, name, ca, cn, server=False):
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n")
            f.write("extendedKeyUsage=%s\n" % ("serverAuth" if server else "clientAuth"))
            f.write("subjectAltName=%s\n" % ("DNS:localhost,IP:127.0.0.1" if server else "DNS:" + cn))
        self._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
        self._run("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                  "-CAcreateserial", "-out", name + ".pem", "-days", "1", "-extfile", ext)
        return self.path(name + ".pem"), self.path(name + ".key")

    def read(self, name):
        with open(self.path(name)) as f:
            return f.read()


class Broker:
    """Debian's mosquitto with one TLS listener requiring client certificates."""

    def __init__(self, d, pki, server, plugin, client_cert=None):
        """`client_cert`: (certificate, key) the plugin presents to iotauth; the
        server's dev-PKI gateway pair by default."""
        cert, key = client_cert or (server.pki("gateway.pem"), server.pki("gateway.key"))
        self.port = free_port()
        self.conf = os.path.join(d, "mosquitto.conf")
        self.log_path = os.path.join(d, "mosquitto.log")
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "per_listener_settings false",
                "allow_anonymous false",
                "user %s" % getpass.getuser(),
                "log_dest stderr",
                "log_type all",
                "listener %d 127.0.0.1" % self.port,
                "cafile %s" % pki.path("client-cas.pem"),
                "certfile %s" % pki.path("broker.pem"),
                "keyfile %s" % pki.path("broker.key"),
                "require_certificate true",
                "plugin %s" % plugin,
                "plugin_opt_address %s" % server.address,
                "plugin_opt_ca_file %s" % server.pki("ca.pem"),
                "plugin_opt_cert_file %s" % cert,
                "plugin_opt_key_file %s" % key,
                # Generous: under --config=asan, with other tests on both cores, a
                # call can take seconds; a timeout would refuse for the wrong reason.
                "plugin_opt_timeout_ms 15000",
                "plugin_opt_cache_size 100",
                "",
            ]))
        self.log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        # Under --config=asan the plugin is instrumented while Debian's mosquitto is
        # not: preload the sanitizer runtimes the plugin links, as ASan requires.
        ldd = subprocess.run(["ldd", plugin], capture_output=True, text=True).stdout
        preload = [line.split("=>")[1].split()[0] for line in ldd.splitlines()
                   if ("libasan" in line or "libubsan" in line) and "=>" in line]
        if preload:
            env["LD_PRELOAD"] = ":".join(preload)
            # mosquitto's own allocations are not ours to judge.
            env["ASAN_OPTIONS"] = "detect_leaks=0"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited %d:\n%s" % (self.proc.returncode, self.log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen:\n" + self.log())

    def log(self, since=0):
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def log_size(self):
        return os.path.getsize(self.log_path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


class Device:
    """One paho-mqtt client over TLS with a client certificate."""

    def __init__(self, test, client_id, username=None, password=None, cert="plain", will=None):
        self.client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.client_id = client_id
        self.log_mark = test.broker.log_size()  # this connect's lines come after it
        pki = test.pki
        self.client.tls_set(ca_certs=pki.path("broker-ca.pem"), certfile=pki.path(cert + ".pem"),
                            keyfile=pki.path(cert + ".key"))
        if username is not None or password is not None:
            self.client.username_pw_set(username, password)
        self.connected = threading.Event()
        self.rc = None
        self.messages = []
        self.granted = {}
        self.sub_done = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("localhost", test.broker.port, keepalive=30)
        self.client.loop_start()
        self.connected.wait(30)  # beyond the plugin's timeout

    def _on_connect(self, client, userdata, flags, rc):
        self.rc = rc
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, granted_qos):
        self.granted[mid] = list(granted_qos)
        self.sub_done.set()

    def subscribe(self, topic):
        self.sub_done.clear()
        _, mid = self.client.subscribe(topic, qos=1)
        assert self.sub_done.wait(10), "no SUBACK for " + topic
        return self.granted[mid][0]

    def publish(self, topic, payload):
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish()

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def drop(self):
        """Loses the connection without a DISCONNECT (the broker then sends the will)."""
        self.client.loop_stop()  # first: paho's loop would reconnect
        self.client.socket().close()


class BrokerE2ETest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(MOSQUITTO):
            raise unittest.SkipTest("Debian's mosquitto is not installed")
        cls.tmp = tempfile.mkdtemp(prefix="iotauth-broker-e2e-")
        cls.pki = Pki(cls.tmp)
        cls.pki.leaf("plain", "unreg-ca", "plain-device")
        cls.server = h.Server().start()
        cls.admin = cls.server.channel("admin")
        cls.gateway = cls.server.channel("gateway")
        cls.keys = {}
        h.call(cls.admin, REG + "CreateTenant", {"tenant": {"id": TENANT, "hub_host": HUB}})
        h.call(cls.admin, REG + "CreateProduct", {"product": {
            "tenant_id": TENANT, "product_key": PRODUCT,
            "allowed_credential_types": ["CREDENTIAL_TYPE_SAS", "CREDENTIAL_TYPE_DEVICE_TRIPLE",
                                         "CREDENTIAL_TYPE_X509_CA"],
            "default_rules": [{"effect": "RULE_EFFECT_ALLOW", "action": "RULE_ACTION_ALL",
                               "topic_filter": "devices/${device}/#"},
                              # Every device may watch the others' status (their wills).
                              {"effect": "RULE_EFFECT_ALLOW", "action": "RULE_ACTION_SUBSCRIBE",
                               "topic_filter": "devices/+/status"}]}})
        for dev in ("d1", "d2", "d3"):
            key = base64.b64encode(os.urandom(32)).decode()
            cls.keys[dev] = key
            h.call(cls.admin, REG + "CreateDevice", {"device": {
                "tenant_id": TENANT, "device_id": dev, "product_key": PRODUCT,
                "status": "DEVICE_STATUS_ENABLED",
                "credentials": {"symmetric_key": {"primary_key": key, "secondary_key": key}}}})
        # The identity mirror picks the devices up within a second.
        tok = sas_token(HUB, "d2", cls.keys["d2"], int(time.time()) + 3600)
        deadline = time.time() + 10
        while True:
            resp = h.to_dict(h.call(cls.gateway, AUTH, {"connect": {
                "client_id": "d2", "username": "%s/d2/?api-version=2021-04-12" % HUB,
                "password": base64.b64encode(tok.encode()).decode()}}))
            if resp.get("decision") == "DECISION_ALLOW":
                break
            if time.time() > deadline:
                raise AssertionError("devices not visible to Authenticate: %s" % resp)
            time.sleep(0.05)
        plugin = h.runfile("clients/mosquitto/libiotauth_mosquitto.so")
        cls.broker = Broker(cls.tmp, cls.pki, cls.server, plugin)

    @classmethod
    def tearDownClass(cls):
        broker = getattr(cls, "broker", None)
        if broker:
            broker.stop()
        server = getattr(cls, "server", None)
        if server:
            rc = server.stop()
            if rc != 0:
                raise AssertionError("server exited %s:\n%s" % (rc, server.log()))
        shutil.rmtree(getattr(cls, "tmp", ""), ignore_errors=True)

    def sas_device(self, dev, token=None):
        token = token or sas_token(HUB, dev, self.keys[dev], int(time.time()) + 3600)
        return Device(self, dev, "%s/%s/?api-version=2021-04-12" % (HUB, dev), token)

    def assertConnected(self, d, what):
        self.assertEqual(d.rc, 0, "%s: CONNACK %s\n%s" % (what, d.rc, self.broker.log()[-3000:]))

    def assertRefused(self, d, what, reason):
        """CONNACK 5, and the plugin's log line says iotauth denied it for `reason`
        (not a timeout or a transport error, which would also refuse)."""
        self.assertIsNotNone(d.rc, "%s: no CONNACK" % what)
        self.assertEqual(d.rc, 5, "%s: expected 'not authorised', got %s" % (what, d.rc))
        line = "iotauth: connect of client '%s' denied: %s" % (d.client_id, reason)
        deadline = time.time() + 5
        while line not in self.broker.log(since=d.log_mark) and time.time() < deadline:
            time.sleep(0.05)
        self.assertIn(line, self.broker.log(since=d.log_mark),
                      "%s: refused, but not for %s; broker log:\n%s\nserver log:\n%s" % (
                          what, reason, self.broker.log(since=d.log_mark)[-3000:],
                          self.server.log()[-3000:]))

    def test_a_sas(self):
        d = self.sas_device("d1")
        try:
            self.assertConnected(d, "SAS token")
        finally:
            d.close()
        good = sas_token(HUB, "d1", self.keys["d1"], int(time.time()) + 3600)
        # Flip one bit of the decoded signature and encode it again: the token stays
        # well formed, so the deny must be BAD_SIGNATURE. (Editing the encoded text
        # could hit a '%2B' escape and make it MALFORMED: that made this test flaky.)
        head, sig_and_rest = good.split("sig=", 1)
        sig, rest = sig_and_rest.split("&", 1)
        raw = bytearray(base64.b64decode(urllib.parse.unquote(sig)))
        raw[0] ^= 0x01
        tampered = "%ssig=%s&%s" % (head, urllib.parse.quote(base64.b64encode(bytes(raw)).decode(), safe=""),
                                   rest)
        d = self.sas_device("d1", tampered)
        try:
            self.assertRefused(d, "tampered SAS token", "DENY_REASON_BAD_SIGNATURE")
        finally:
            d.close()

    def test_a_device_chosen_client_id_cannot_forge_a_log_line(self):
        # Client ids reach the broker log through the plugin: a quote in one is
        # escaped, so it cannot end the quoted id and write a verdict of its own.
        d = Device(self, "q' allowed: allow", username="x", password="y")
        try:
            self.assertEqual(d.rc, 5, self.broker.log(since=d.log_mark)[-3000:])
            want = "iotauth: connect of client 'q\\' allowed: allow' denied: "
            deadline = time.time() + 5
            while want not in self.broker.log(since=d.log_mark) and time.time() < deadline:
                time.sleep(0.05)
            log = self.broker.log(since=d.log_mark)
            self.assertIn(want, log)
            self.assertNotIn("connect of client 'q' allowed", log)
        finally:
            d.close()

    def test_b_triple(self):
        ts = int(time.time() * 1000)
        cid, user, pw = triple(PRODUCT, "d3", self.keys["d3"], "sn-d3", ts)
        d = Device(self, cid, user, pw)
        try:
            self.assertConnected(d, "device triple")
        finally:
            d.close()
        cid, user, pw = triple(PRODUCT, "d3", "wrong-secret-wrong-secret-wrong!!", "sn-d3", ts + 1)
        d = Device(self, cid, user, pw)
        try:
            self.assertRefused(d, "device triple with a wrong secret", "DENY_REASON_BAD_SIGNATURE")
        finally:
            d.close()

    def test_c_x509(self):
        cert_pem, _ = self.pki.leaf("dev-x1", "devices-ca", "x1")
        self.pki.leaf("dev-x1-unreg", "unreg-ca", "x1")
        ca = h.to_dict(h.call(self.admin, REG + "CreateCaCertificate", {"ca": {
            "tenant_id": TENANT, "certificate_pem": self.pki.read("devices-ca.pem")}}))
        # Proof of possession (the only way a CA becomes trusted): a certificate whose
        # CN is the CA's verification code, signed by the CA's key.
        self.pki.leaf("proof", "devices-ca", ca["verification_code"])
        h.call(self.admin, "iotauth.identity.v1.CertificateService/VerifyCaPossession", {
            "tenant_id": TENANT, "ca_id": ca["id"],
            "verification_certificate": base64.b64encode(self.pki.read("proof.pem").encode()).decode()})
        h.call(self.admin, REG + "CreateDevice", {"device": {
            "tenant_id": TENANT, "device_id": "x1", "product_key": PRODUCT,
            "status": "DEVICE_STATUS_ENABLED", "credentials": {"ca_signed_allowed": True}}})
        probe = {"tenant_id": TENANT, "connect": {
            "client_id": "x1", "username": "x1",
            "peer_certificate_chain": [base64.b64encode(self.pki.read("dev-x1.pem").encode()).decode()]}}
        resp = {}
        deadline = time.time() + 5
        while time.time() < deadline:
            resp = h.to_dict(h.call(self.gateway, AUTH, probe))
            if resp.get("decision") == "DECISION_ALLOW":
                break
            time.sleep(0.1)
        self.assertEqual(resp.get("decision"), "DECISION_ALLOW",
                         "a certificate from the verified CA is not accepted within 5 s: %s" % resp)
        # Mosquitto runs the auth plugin only when the CONNECT carries a username.
        d = Device(self, "x1", "x1", None, cert="dev-x1")
        try:
            self.assertConnected(d, "certificate from a registered, verified CA")
        finally:
            d.close()
        d = Device(self, "x1", "x1", None, cert="dev-x1-unreg")
        try:
            self.assertRefused(d, "certificate from an unregistered CA", "DENY_REASON_UNTRUSTED_ISSUER")
        finally:
            d.close()
        h.call(self.admin, "iotauth.identity.v1.CertificateService/RevokeCertificate", {
            "tenant_id": TENANT, "certificate": base64.b64encode(self.pki.read("dev-x1.pem").encode()).decode(),
            "reason": "keyCompromise"})
        time.sleep(1.5)  # the identity mirror applies the revocation within a second
        d = Device(self, "x1", "x1", None, cert="dev-x1")
        try:
            self.assertRefused(d, "revoked certificate", "DENY_REASON_REVOKED")
        finally:
            d.close()

    def test_e_every_attempt_audited(self):
        """(e) The connects of (a), (b) and (c) -- allowed and refused -- are in the audit
        log with the right outcome and reason (runs after them: tests sort by name)."""
        reader = self.server.channel("reader")
        events, token = [], ""
        while True:
            resp = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Query", {
                "tenant_id": TENANT, "type": "EVENT_TYPE_AUTHENTICATION", "page_size": 1000,
                "page_token": token}))
            events += resp.get("events", [])
            token = resp.get("next_page_token", "")
            if not token:
                break
        seen = {(e.get("device_id", ""), e.get("outcome"), e.get("reason", "")) for e in events}
        # The revoked certificate of (c) was judged by this tenant's CA: its deny is
        # audited under the tenant (the unregistered CA's is not: no tenant trusts it).
        for want in (("d1", "OUTCOME_ALLOW", ""), ("d1", "OUTCOME_DENY", "DENY_REASON_BAD_SIGNATURE"),
                     ("d3", "OUTCOME_ALLOW", ""), ("d3", "OUTCOME_DENY", "DENY_REASON_BAD_SIGNATURE"),
                     ("", "OUTCOME_DENY", "DENY_REASON_REVOKED")):
            self.assertIn(want, seen, "audit events of tenant %s:\n%s" % (
                TENANT, "\n".join(str(e) for e in events)))
        for e in events:
            self.assertEqual(e.get("credential_type") is not None or e.get("outcome") == "OUTCOME_DENY", True)
            self.assertTrue(e.get("hash"))

    def test_d_publish_subscribe_rules(self):
        d1 = self.sas_device("d1")
        d2 = self.sas_device("d2")
        try:
            self.assertConnected(d1, "d1")
            self.assertConnected(d2, "d2")
            self.assertEqual(d1.subscribe("devices/d1/#"), 1)
            self.assertEqual(d2.subscribe("devices/d2/#"), 1)
            # Subscribing to another device's topics, or to everything: refused.
            self.assertEqual(d1.subscribe("devices/d2/#"), 128)
            self.assertEqual(d1.subscribe("#"), 128)
            # Own topic: delivered.
            d1.publish("devices/d1/telemetry", b"own")
            deadline = time.time() + 5
            while time.time() < deadline and ("devices/d1/telemetry", b"own") not in d1.messages:
                time.sleep(0.02)
            self.assertIn(("devices/d1/telemetry", b"own"), d1.messages)
            # Another device's topic: the broker drops it, d2 never sees it.
            d1.publish("devices/d2/commands", b"spoof")
            d2.publish("devices/d2/telemetry", b"marker")
            deadline = time.time() + 5
            while time.time() < deadline and ("devices/d2/telemetry", b"marker") not in d2.messages:
                time.sleep(0.02)
            self.assertIn(("devices/d2/telemetry", b"marker"), d2.messages)
            time.sleep(0.3)
            self.assertNotIn(("devices/d2/commands", b"spoof"), d2.messages)
            self.assertEqual([m for m in d1.messages if not m[0].startswith("devices/d1/")], [])
        finally:
            d1.close()
            d2.close()
        log = self.broker.log()
        self.assertIn("denied access", log)

    def test_f_last_will_after_a_lost_connection(self):
        # Mosquitto checks a will (MQTT write access) after the plugin has been told of
        # the disconnect: the lost device's rules must still answer then.
        watcher = self.sas_device("d2")
        lost = None
        try:
            self.assertConnected(watcher, "d2")
            self.assertEqual(watcher.subscribe("devices/d1/status"), 1)
            token = sas_token(HUB, "d1", self.keys["d1"], int(time.time()) + 3600)
            lost = Device(self, "d1", "%s/d1/?api-version=2021-04-12" % HUB, token,
                          will=("devices/d1/status", b"offline"))
            self.assertConnected(lost, "d1 with a will")
            lost.drop()
            deadline = time.time() + 10
            while time.time() < deadline and ("devices/d1/status", b"offline") not in watcher.messages:
                time.sleep(0.02)
            self.assertIn(("devices/d1/status", b"offline"), watcher.messages,
                          "will not delivered; broker log:\n" + self.broker.log()[-3000:])
        finally:
            watcher.close()



class PluginCertificateRenewalTest(unittest.TestCase):
    """The plugin's client certificate is renewed on disk while the broker runs: the
    next connection to iotauth presents the new one, without a broker restart. A
    broken renewal is refused and the last good pair stays in use."""

    def test_a_renewed_client_certificate_is_used_after_a_reconnect(self):
        if not os.path.exists(MOSQUITTO):
            raise unittest.SkipTest("Debian's mosquitto is not installed")
        tmp = tempfile.mkdtemp(prefix="iotauth-plugin-renewal-")
        self.pki = Pki(tmp)
        self.pki.leaf("plain", "unreg-ca", "plain-device")  # the device's TLS to the broker
        port = free_port()
        address = ["--set=grpc.address=127.0.0.1:%d" % port]
        self.server = h.Server(args=address).start()
        server = self.server  # its PKI stays the same across restarts (one data dir)
        key = register_sas_device(server.channel("admin"), "r1")
        # The plugin starts with a certificate iotauth knows but that lacks the
        # gateway role (the reader's), as an expired or wrong one would be refused.
        live_cert, live_key = os.path.join(tmp, "plugin.pem"), os.path.join(tmp, "plugin.key")

        def put(role):
            for src, dst in ((server.pki(role + ".pem"), live_cert),
                             (server.pki(role + ".key"), live_key)):
                shutil.copyfile(src, dst + ".new")
                os.replace(dst + ".new", dst)
        put("reader")
        self.broker = Broker(tmp, self.pki, server,
                             h.runfile("clients/mosquitto/libiotauth_mosquitto.so"),
                             client_cert=(live_cert, live_key))

        def connect():
            token = sas_token(HUB, "r1", key, int(time.time()) + 3600)
            d = Device(self, "r1", "%s/r1/?api-version=2021-04-12" % HUB, token)
            d.close()
            return d.rc

        def restart_and_connect(what):
            """iotauth restarts (a rollout), so the plugin connects to it again; a
            device then connects within 30 s. `self.server` is the new server."""
            self.assertEqual(self.server.stop(), 0, self.server.log())
            self.server = h.Server(data_dir=self.server.data_dir, args=address).start()
            deadline = time.time() + 30
            rc = connect()
            while rc != 0 and time.time() < deadline:
                time.sleep(0.5)
                rc = connect()
            self.assertEqual(rc, 0, "%sbroker log:\n%s\nserver log:\n%s" % (
                what, self.broker.log()[-3000:], self.server.log()[-3000:]))
        try:
            self.assertEqual(connect(), 5, self.broker.log()[-2000:])
            # The renewal lands: the gateway pair, each file replaced by a rename.
            put("gateway")
            # The plugin's open connection keeps its old certificate; iotauth
            # restarting makes it connect again, with the new one.
            restart_and_connect("")

            # A broken renewal: the reader's certificate with the gateway's key. The
            # plugin refuses it, says so in the broker's log, and keeps presenting
            # the gateway pair on new connections to iotauth.
            shutil.copyfile(server.pki("reader.pem"), live_cert + ".new")
            os.replace(live_cert + ".new", live_cert)
            deadline = time.time() + 30
            refused = "tls: the changed files cannot be used"
            while refused not in self.broker.log() and time.time() < deadline:
                time.sleep(0.2)  # no connect: the broker's tick writes the line
            self.assertIn(refused, self.broker.log(), self.broker.log()[-3000:])
            self.assertIn("does not belong to the certificate", self.broker.log())
            restart_and_connect("the last good pair: ")
        finally:
            self.broker.stop()
            self.assertEqual(self.server.stop(), 0, self.server.log())
            shutil.rmtree(tmp, ignore_errors=True)

class AuditRefuseTest(unittest.TestCase):
    """audit.when_unwritable=refuse through a real broker: while the server's audit
    log refuses writes (a file size limit put on it), a device's connect is
    refused (CONNACK 5), not let through unrecorded; the plugin reads the refusal's
    stable reason (AUDIT_UNWRITABLE), so it keeps asking instead of failing fast as
    for an unreachable server, and the device connects again as soon as writes
    succeed."""

    def test_connect_refused_while_the_audit_log_cannot_record(self):
        import resource
        if not os.path.exists(MOSQUITTO):
            self.skipTest("Debian's mosquitto is not installed")
        self.tmp = tempfile.mkdtemp(prefix="iotauth-broker-refuse-")
        self.pki = Pki(self.tmp)
        self.pki.leaf("plain", "unreg-ca", "plain-device")
        server = h.Server(args=["--set=audit.when_unwritable=refuse"], log_through_pipe=True).start()
        self.broker = None
        try:
            gateway = server.channel("gateway")
            key = register_sas_device(server.channel("admin"), "d9")
            self.broker = Broker(self.tmp, self.pki, server, h.runfile("clients/mosquitto/libiotauth_mosquitto.so"))
            expiry = int(time.time()) + 3600

            def connect():
                # A new expiry each time: a new token, so the plugin's decision cache
                # cannot answer for iotauth.
                nonlocal expiry
                expiry += 1
                return Device(self, "d9", "%s/d9/?api-version=2021-04-12" % HUB,
                              sas_token(HUB, "d9", key, expiry))

            def writable():
                return h.metric_value(server.metrics(), "iotauth_audit_writable")

            def connects_within(seconds, what):
                deadline = time.time() + seconds
                while True:
                    d = connect()
                    d.close()
                    if d.rc == 0:
                        return
                    self.assertLess(time.time(), deadline, "%s:\n%s" % (what, self.broker.log()[-2000:]))
                    time.sleep(0.2)

            connects_within(10, "d9 never connected")  # the mirror has it within a second

            limit = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (1, limit[1]))
            try:
                deadline = time.time() + 30
                i = 0
                while writable() != 0:  # decisions until the loss is reported
                    self.assertLess(time.time(), deadline, "the audit log was not reported unwritable")
                    try:
                        h.call(gateway, AUTH, {"tenant_id": TENANT, "request_id": "fill-%d" % i,
                                               "connect": {"client_id": "ghost", "username": "x", "password": "eA=="}})
                    except grpc.RpcError as e:
                        self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e.details())
                        break
                    i += 1
                    time.sleep(0.05)
                mark = self.broker.log_size()
                for _ in range(2):
                    d = connect()
                    d.close()
                    self.assertEqual(d.rc, 5, "connected while the audit log could not record it")
                # Both connects reached iotauth: a refusal is not an outage, so no
                # fail-fast window opened after the first.
                refusals = self.broker.log(since=mark)
                self.assertEqual(refusals.count(
                    "iotauth: connect of client 'd9' denied: iotauth refused: AUDIT_UNWRITABLE"), 2, refusals)
                self.assertNotIn("failing fast", refusals)
                self.assertGreaterEqual(
                    h.metric_value(server.metrics(), "iotauth_audit_refused_calls_total"), 1)
            finally:
                resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, limit)
            deadline = time.time() + 30
            while writable() != 1:
                self.assertLess(time.time(), deadline, "the audit log not writable again")
                time.sleep(0.1)
            # The gauge reads 1 only once the gate admits again: the next connect is let in.
            d = connect()
            d.close()
            self.assertEqual(d.rc, 0, "not let in once the audit log recovered:\n%s" % self.broker.log()[-2000:])
            print("connects refused while the audit log could not record them; let in on the first "
                  "connect after it recovered")
        finally:
            if self.broker:
                self.broker.stop()
            self.assertEqual(server.stop(), 0, server.log())
            shutil.rmtree(self.tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
