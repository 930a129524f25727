"""Foundation acceptance: health, reflection, metrics, config errors, caller
roles and graceful shutdown of the real all-in-one binary."""

import base64
import hashlib
import json
import os
import resource
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

import iotauth_harness as h

SERVICES = ["iotauth.identity.v1.IdentityService", "iotauth.registry.v1.DeviceRegistry",
            "iotauth.audit.v1.AuditLog"]


class FoundationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server().start()

    @classmethod
    def tearDownClass(cls):
        cls.assertEqual = unittest.TestCase.assertEqual
        rc = cls.server.stop()
        if rc != 0:
            raise AssertionError("server exited %s:\n%s" % (rc, cls.server.log()))

    def test_health_overall_and_per_service(self):
        ch = self.server.channel(role=None)  # health needs no client certificate
        for svc in [""] + SERVICES:
            resp = h.call(ch, "grpc.health.v1.Health/Check", {"service": svc})
            self.assertEqual(h.to_dict(resp)["status"], "SERVING", svc)
        with self.assertRaises(grpc.RpcError) as e:
            h.call(ch, "grpc.health.v1.Health/Check", {"service": "no.such.Service"})
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_health_with_buf_curl(self):
        r = h.buf_curl(self.server, "grpc.health.v1.Health/Check", data={"service": SERVICES[0]},
                       role=None)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["status"], "SERVING")

    def test_reflection_lists_and_describes(self):
        r = h.buf_curl(self.server, ["--list-services", "https://" + self.server.address], role=None)
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = set(r.stdout.split())
        for svc in SERVICES + ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]:
            self.assertIn(svc, listed)
        r = h.buf_curl(self.server, ["--list-methods", "https://" + self.server.address], role=None)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("iotauth.identity.v1.IdentityService/Authenticate", r.stdout)
        # describe: fetch the file descriptor of Authenticate's service over reflection.
        ch = self.server.channel(role=None)
        req_cls, resp_cls, _, _ = h.schema().method(
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        stub = ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=resp_cls.FromString)
        req = req_cls(file_containing_symbol="iotauth.identity.v1.IdentityService")
        resp = next(iter(stub(iter([req]), timeout=10)))
        from google.protobuf import descriptor_pb2
        names = []
        for raw in resp.file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            names.append(fd.name)
            if fd.package == "iotauth.identity.v1":
                methods = [m.name for s in fd.service for m in s.method]
                self.assertIn("Authenticate", methods)
        self.assertIn("proto/iotauth/identity/v1/identity.proto", names)

    def test_metrics_pass_promtool_and_count_calls(self):
        ch = self.server.channel(role=None)
        for _ in range(3):
            h.call(ch, "grpc.health.v1.Health/Check", {"service": ""})
        text = self.server.metrics()
        r = h.promtool_check(text)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        handled = h.metric_value(text, "grpc_server_handled_total", grpc_service="grpc.health.v1.Health",
                                 grpc_method="Check", grpc_code="OK", grpc_type="unary")
        self.assertGreaterEqual(handled, 3)
        self.assertIsNotNone(h.metric_value(text, "grpc_server_started_total"))
        self.assertIsNotNone(h.metric_value(text, "grpc_server_handling_seconds_bucket"))

    def test_unauthenticated_calls_are_refused_before_their_message_is_read(self):
        # Without a credential, a call is refused as its headers arrive: a flood of
        # large requests no longer has the server buffer each one whole first.
        pid = self.server.proc.pid

        def rss_mib():
            with open("/proc/%d/status" % pid) as f:
                return int([l for l in f if l.startswith("VmRSS")][0].split()[1]) // 1024
        before_metric = h.metric_value(self.server.metrics(),
                                       "iotauth_grpc_unauthenticated_refused_total") or 0
        with open(self.server.pki("ca.pem"), "rb") as f:
            ca = f.read()
        ch = grpc.secure_channel(self.server.address, grpc.ssl_channel_credentials(root_certificates=ca),
                                 options=[("grpc.max_send_message_length", 64 << 20)])
        call = ch.unary_unary("/iotauth.identity.v1.IdentityService/Authenticate")
        body = b"\x0a\x80\x80\xc0\x07" + b"A" * (15 << 20)  # one 15 MiB field
        start = rss_mib()
        futures = [call.future(body, timeout=60) for _ in range(40)]
        peak = start
        codes = []
        for f in futures:
            try:
                f.result()
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
            peak = max(peak, rss_mib())
        ch.close()
        self.assertEqual(set(codes), {"UNAUTHENTICATED"})
        with open("/proc/%d/maps" % pid) as f:
            sanitized = "libasan" in f.read()
        if not sanitized:  # ASan's quarantine keeps freed memory resident
            # 600 MiB were sent; buffered whole, each would have been held.
            self.assertLess(peak - start, 300, "RSS went from %d to %d MiB" % (start, peak))
        refused = h.metric_value(self.server.metrics(), "iotauth_grpc_unauthenticated_refused_total")
        self.assertGreaterEqual(refused - before_metric, 40)
        # A caller with a credential still gets through, and health needs none.
        self.assertEqual(health_status(self.server.channel(role=None)), 1)
        h.call(self.server.channel(role="reader"), "iotauth.registry.v1.DeviceRegistry/ListTenants", {})

    def test_refused_callers_are_audited_without_their_token(self):
        # The gate refuses these before any handler runs. Its tally reaches the audit
        # log every 5 s: one event per method and what the calls presented, with a
        # count, and a bearer token only as a truncated hash.
        method = "/iotauth.registry.v1.DeviceRegistry/ListTenants"
        planted = "planted-refused-token-7f3a9c01"
        fingerprint = "sha256:" + hashlib.sha256(planted.encode()).hexdigest()[:16]
        for token, times in ((None, 3), (planted, 2)):
            ch = self.server.channel(role=None, token=token)
            for _ in range(times):
                with self.assertRaises(grpc.RpcError) as e:
                    h.call(ch, method[1:], {})
                self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            ch.close()
        reader = self.server.channel(role="reader")
        deadline = time.time() + 30
        while True:
            resp = h.call(reader, "iotauth.audit.v1.AuditLog/Query",
                          {"type": "EVENT_TYPE_CALLER_REFUSED", "page_size": 1000})
            events = [e for e in h.to_dict(resp).get("events", [])
                      if e["attributes"].get("method") == method]
            counted = {}
            for e in events:
                key = (e.get("credential_type"), e.get("credential_fingerprint", ""))
                counted[key] = counted.get(key, 0) + int(e["attributes"]["count"])
            if counted.get(("none", ""), 0) >= 3 and counted.get(("bearer_token", fingerprint)) == 2:
                break
            self.assertLess(time.time(), deadline, "refusals not audited: %s" % counted)
            time.sleep(0.5)
        for e in events:
            self.assertEqual(e["outcome"], "OUTCOME_DENY", e)
            self.assertEqual(e["reason"], "unauthenticated", e)
            self.assertIn("first_seen", e["attributes"])
        self.assertNotIn(planted, str(resp))
        self.assertNotIn(planted, self.server.log())
        self.assertNotIn(planted, self.server.metrics())

    def test_no_core_files(self):
        # The process holds the master key and every device's keys: a crash must not
        # write them to a core file.
        with open("/proc/%d/limits" % self.server.proc.pid) as f:
            core = [l.split() for l in f if l.startswith("Max core file size")][0]
        self.assertEqual(core[4:6], ["0", "0"], core)
        # The escape hatch for debugging keeps the hard limit as it was inherited (the
        # soft one too, except under ASan, whose runtime sets it to 0 itself).
        other = h.Server(args=["--allow_core_dumps"]).start()
        try:
            with open("/proc/%d/limits" % other.proc.pid) as f:
                mine = [l.split() for l in f if l.startswith("Max core file size")][0]
            with open("/proc/self/limits") as f:
                inherited = [l.split() for l in f if l.startswith("Max core file size")][0]
            self.assertEqual(mine[5], inherited[5])
            self.assertIn("core dumps are allowed", other.log())
        finally:
            self.assertEqual(other.stop(), 0, other.log())

    def test_made_up_methods_do_not_grow_the_metrics(self):
        # A client names any path it likes; gRPC answers UNIMPLEMENTED. The path must
        # not become a label value: that would let any caller add series without
        # bound, and echo whatever it put in the path.
        ch = self.server.channel(role="reader")
        for i in range(50):
            with self.assertRaises(grpc.RpcError) as cm:
                ch.unary_unary("/made.Up%d/SecretPath%d" % (i, i))(b"", timeout=5)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        # Without a credential the call is refused before gRPC looks the path up.
        with self.assertRaises(grpc.RpcError) as cm:
            self.server.channel(role=None).unary_unary("/made.UpAnon/SecretPathAnon")(b"", timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        text = self.server.metrics()
        self.assertNotIn("made.Up", text)
        self.assertNotIn("SecretPath", text)
        unknown = h.metric_value(text, "grpc_server_handled_total", grpc_service="unknown",
                                 grpc_method="unknown", grpc_code="UNIMPLEMENTED")
        self.assertGreaterEqual(unknown, 50)
        r = h.promtool_check(text)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_roles(self):
        auth = "iotauth.identity.v1.IdentityService/Authenticate"
        req = {"connect": {"client_id": "dev-1", "username": "u", "password": "cA=="}}
        # No client certificate: UNAUTHENTICATED.
        with self.assertRaises(grpc.RpcError) as e:
            h.call(self.server.channel(role=None), auth, req)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        # Reader may not authenticate devices.
        with self.assertRaises(grpc.RpcError) as e:
            h.call(self.server.channel(role="reader"), auth, req)
        self.assertEqual(e.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(h.error_reason(e.exception), "ROLE_REQUIRED")
        # Gateway may: an unknown device is a normal DENY, not an error.
        resp = h.to_dict(h.call(self.server.channel(role="gateway"), auth, req))
        self.assertEqual(resp["decision"], "DECISION_DENY")
        # Gateway may not mutate the registry.
        with self.assertRaises(grpc.RpcError) as e:
            h.call(self.server.channel(role="gateway"),
                   "iotauth.registry.v1.DeviceRegistry/CreateTenant", {"tenant": {"id": "t1"}})
        self.assertEqual(e.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        # Reader may read the audit log but not write to it.
        h.call(self.server.channel(role="reader"), "iotauth.audit.v1.AuditLog/Query", {})


class BadConfigTest(unittest.TestCase):
    def run_bad(self, args, expect):
        d = tempfile.mkdtemp(prefix="iotauth-badcfg-")
        p = subprocess.run([h.runfile("services/server/iotauthd"), "--data_dir=" + d] + args,
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn(expect, p.stderr)

    def test_unknown_key_in_file(self):
        f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        f.write('{"grpc": {"adress": "127.0.0.1:0"}}')
        f.close()
        self.run_bad(["--config=" + f.name], "adress")

    def test_malformed_value(self):
        self.run_bad(["--set=identity.clock_skew=soon"], "identity.clock_skew")

    def test_missing_file(self):
        self.run_bad(["--config=/nonexistent/iotauth.json"], "/nonexistent/iotauth.json")

    def test_unreadable_certificate(self):
        self.run_bad(["--set=grpc.tls.mode=mtls", "--set=grpc.tls.cert_file=/nonexistent/cert.pem",
                      "--set=grpc.tls.key_file=/nonexistent/key.pem"], "grpc.tls.cert_file")

    def test_unknown_flag(self):
        self.run_bad(["--no-such-flag"], "--no-such-flag")

    def test_memory_quota_not_a_size(self):
        for bad in ("--grpc_memory_mb=lots", "--grpc_memory_mb=8"):
            self.run_bad([bad], "--grpc_memory_mb takes a number of MiB, at least 16")

    def test_no_new_master_key_for_an_existing_registry(self):
        # First start with the key in the environment (no key file is written), then
        # without it: the registry's secrets are sealed under that key, so iotauthd
        # refuses to start instead of generating another.
        key = base64.b64encode(os.urandom(32)).decode()
        server = h.Server(env={"IOTAUTH_MASTER_KEY": key}).start()
        self.assertEqual(server.stop(), 0, server.log())
        self.assertFalse(os.path.exists(os.path.join(server.data_dir, "master.key")))
        env = dict(os.environ)
        env.pop("IOTAUTH_MASTER_KEY", None)
        p = subprocess.run([h.runfile("services/server/iotauthd"), "--data_dir=" + server.data_dir,
                            "--set=grpc.address=127.0.0.1:0", "--set=metrics.address="],
                           capture_output=True, text=True, timeout=30, env=env)
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn("already exists", p.stderr)
        self.assertIn("IOTAUTH_MASTER_KEY", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(server.data_dir, "master.key")))
        # With the key back, it starts.
        again = h.Server(env={"IOTAUTH_MASTER_KEY": key}, data_dir=server.data_dir).start()
        self.assertEqual(again.stop(), 0, again.log())

    def test_a_configured_key_file_wins_over_the_environment(self):
        # storage.master_key_file is the key; IOTAUTH_MASTER_KEY is only the fallback
        # when no file is configured. A stale (here: unusable) value left in the
        # environment must not override the file.
        key_dir = tempfile.mkdtemp(prefix="iotauth-key-")
        key_file = os.path.join(key_dir, "master.key")
        with open(key_file, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        os.chmod(key_file, 0o600)
        server = h.Server(env={"IOTAUTH_MASTER_KEY": "stale-and-not-a-key"},
                          args=["--set=storage.master_key_file=" + key_file]).start()
        ch = server.channel(role="admin")
        h.call(ch, "iotauth.registry.v1.DeviceRegistry/CreateTenant",
               {"tenant": {"id": "kf", "hub_host": "kf.example.net"}})
        self.assertEqual(server.stop(), 0, server.log())


class OneProcessPerStoreTest(unittest.TestCase):
    def test_a_second_server_on_the_same_stores_is_refused(self):
        # Two servers on one audit log would overwrite each other's events (each
        # keeps the chain's head in memory), and neither would see the other's
        # registry writes. The second is refused and told who holds the store.
        first = h.Server().start()
        ch = first.channel(role="admin")
        h.call(ch, "iotauth.registry.v1.DeviceRegistry/CreateTenant",
               {"tenant": {"id": "one", "hub_host": "one.example.net"}})
        p = subprocess.run([h.runfile("services/server/iotauthd"), "--data_dir=" + first.data_dir,
                            "--set=grpc.address=127.0.0.1:0", "--set=metrics.address="],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn("in use by another process (pid %d)" % first.proc.pid, p.stderr)
        # Only the registry, on a data dir of its own: refused on the registry's lock.
        elsewhere = tempfile.mkdtemp(prefix="iotauth-second-")
        p = subprocess.run([h.runfile("services/server/iotauthd"), "--data_dir=" + elsewhere,
                            "--set=storage.registry_db=" + os.path.join(first.data_dir, "registry.db"),
                            "--set=storage.master_key_file=" + os.path.join(first.data_dir, "master.key"),
                            "--set=grpc.address=127.0.0.1:0", "--set=metrics.address="],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn("the registry database", p.stderr)
        self.assertIn("(pid %d)" % first.proc.pid, p.stderr)
        # The first server's log is untouched: its events are all there and verify.
        h.call(ch, "iotauth.registry.v1.DeviceRegistry/CreateTenant",
               {"tenant": {"id": "two", "hub_host": "two.example.net"}})
        audit = first.channel(role="admin")
        deadline = time.time() + 10
        while True:
            v = h.call(audit, "iotauth.audit.v1.AuditLog/Verify", {})
            if v.events_checked >= 2 or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertTrue(v.ok, v)
        self.assertGreaterEqual(v.events_checked, 2)
        # A lock dies with its holder (kill -9 included): the next server starts.
        first.kill9()
        again = h.Server(data_dir=first.data_dir).start()
        self.assertEqual(again.stop(), 0, again.log())


def make_pki(d, name):
    """A CA and a server certificate for localhost, made with the openssl CLI.
    Returns (ca path, cert path, key path, serial as openssl prints it)."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)
    ca_key, ca = os.path.join(d, name + "-ca.key"), os.path.join(d, name + "-ca.pem")
    key, csr, cert = (os.path.join(d, name + ext) for ext in (".key", ".csr", ".pem"))
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "30", "-subj", "/CN=e2e %s CA" % name)
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
        "-out", csr, "-subj", "/CN=localhost")
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "20", "-extfile", ext)
    serial = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", cert], check=True,
                            capture_output=True, text=True).stdout.strip()
    return ca, cert, key, serial


def served_serial(port):
    """The serial of the certificate the server presents to a new connection, as
    openssl s_client sees it."""
    hello = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                            "-servername", "localhost", "-alpn", "h2", "-showcerts"],
                           input=b"", capture_output=True, timeout=30)
    # The server's HTTP/2 frames follow the handshake on stdout: not text.
    out = hello.stdout.decode("latin-1")
    begin = out.find("-----BEGIN CERTIFICATE-----")
    end = out.find("-----END CERTIFICATE-----")
    if begin < 0 or end < 0:
        return None
    pem = out[begin:end + len("-----END CERTIFICATE-----")] + "\n"
    return subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem,
                          capture_output=True, text=True).stdout.strip()


def healthy(address, ca_path, timeout=5):
    with open(ca_path, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    ch = grpc.secure_channel(address, creds,
                             options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        return health_status(ch, timeout) == 1
    except grpc.RpcError:
        return False
    finally:
        ch.close()


def health_status(channel, timeout=5):
    req_cls, resp_cls, _, _ = h.schema().method("grpc.health.v1.Health/Check")
    call = channel.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=req_cls.SerializeToString,
                               response_deserializer=resp_cls.FromString)
    return call(req_cls(), timeout=timeout).status


class TlsReloadTest(unittest.TestCase):
    """cert-manager (or any renewal job) replaces the certificate files while the
    server runs: new connections get the new certificate without a restart, open
    ones carry on, and a broken replacement is refused while the last good
    certificate stays in use."""

    def test_replaced_files_are_served_without_a_restart(self):
        d = tempfile.mkdtemp(prefix="iotauth-tls-")
        ca_a, cert_a, key_a, serial_a = make_pki(d, "a")
        ca_b, cert_b, key_b, serial_b = make_pki(d, "b")
        live_cert, live_key = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")

        def put(cert, key):
            # Written in place, one file after the other, as `cp` does: the server
            # must not act on the half-way state.
            for src, dst in ((cert, live_cert), (key, live_key)):
                with open(src, "rb") as f, open(dst, "wb") as out:
                    out.write(f.read())

        put(cert_a, key_a)
        server = h.Server(args=["--set=grpc.tls.mode=tls", "--set=grpc.tls.cert_file=" + live_cert,
                                "--set=grpc.tls.key_file=" + live_key]).start()
        try:
            self.assertEqual(served_serial(server.grpc_port), serial_a)
            with open(ca_a, "rb") as f:
                open_channel = grpc.secure_channel(server.address,
                                                   grpc.ssl_channel_credentials(root_certificates=f.read()))
            self.assertEqual(health_status(open_channel), 1)
            staging = os.path.join(server.data_dir, "tls-staging")
            self.assertEqual(len([e for e in os.listdir(staging) if not e.startswith(".")]), 1)

            put(cert_b, key_b)
            deadline = time.time() + 15
            while served_serial(server.grpc_port) != serial_b and time.time() < deadline:
                time.sleep(0.2)
            self.assertEqual(served_serial(server.grpc_port), serial_b, server.log())
            self.assertTrue(healthy(server.address, ca_b))
            self.assertFalse(healthy(server.address, ca_a, timeout=2))
            # The connection made before the change is still served.
            self.assertEqual(health_status(open_channel), 1)
            text = server.metrics()
            self.assertEqual(h.promtool_check(text).returncode, 0, h.promtool_check(text).stdout)
            self.assertEqual(h.metric_value(text, "iotauth_tls_reloads_total", use="server",
                                            result="applied"), 1)
            self.assertEqual(h.metric_value(text, "iotauth_tls_files_rejected", use="server"), 0)
            not_after = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-dateopt", "iso_8601",
                                        "-in", cert_b], capture_output=True, text=True).stdout
            expiry = h.metric_value(text, "iotauth_tls_certificate_expiry_timestamp_seconds", use="server")
            self.assertEqual(time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(expiry)),
                             not_after.strip().split("=", 1)[1])

            # A certificate written without its key: refused, and B is still served.
            put(cert_a, key_b)
            deadline = time.time() + 15
            while (h.metric_value(server.metrics(), "iotauth_tls_files_rejected", use="server") != 1
                   and time.time() < deadline):
                time.sleep(0.2)
            text = server.metrics()
            self.assertEqual(h.metric_value(text, "iotauth_tls_files_rejected", use="server"), 1)
            self.assertEqual(h.metric_value(text, "iotauth_tls_reloads_total", use="server",
                                            result="rejected"), 1)
            self.assertEqual(served_serial(server.grpc_port), serial_b)
            self.assertTrue(healthy(server.address, ca_b))
            log = server.log()
            self.assertIn("does not belong to the certificate", log)
            with open(key_b) as f:
                body = [l for l in f.read().splitlines() if l and not l.startswith("-----")]
            for line in body:
                self.assertNotIn(line, log)
        finally:
            self.assertEqual(server.stop(), 0, server.log())
        # The staged copies go with the process.
        self.assertEqual([e for e in os.listdir(staging) if not e.startswith(".")], [])


class ShutdownTest(unittest.TestCase):
    def test_sigterm_under_load_drains_and_exits_zero(self):
        # A grace period long enough for the import under ASan on a busy machine: what
        # is tested is that the drain lets it finish, not how long it takes.
        server = h.Server(args=["--set=shutdown.grace_period=120s"]).start()
        ch = server.channel(role="admin")
        h.call(ch, "iotauth.registry.v1.DeviceRegistry/CreateTenant",
               {"tenant": {"id": "drain", "hub_host": "drain.example.net"}})
        h.call(ch, "iotauth.registry.v1.DeviceRegistry/CreateProduct",
               {"product": {"tenant_id": "drain", "product_key": "pk-drain",
                            "allowed_credential_types": ["CREDENTIAL_TYPE_SAS"]}})
        # A long client-streaming import is in flight when SIGTERM arrives.
        n = 20000

        def batches():
            for i in range(0, n, 500):
                yield {"tenant_id": "drain", "generate_keys": True,
                       "devices": [{"tenant_id": "drain", "device_id": "d-%06d" % j,
                                    "product_key": "pk-drain"} for j in range(i, i + 500)]}
                time.sleep(0.02)

        fut = h.client_stream(ch, "iotauth.registry.v1.DeviceRegistry/ImportDevices", batches())
        # Plus a stream of unary calls from other threads.
        stop = threading.Event()
        errors = []

        def hammer():
            c = server.channel(role=None)
            while not stop.is_set():
                try:
                    h.call(c, "grpc.health.v1.Health/Check", {"service": ""}, timeout=5)
                except grpc.RpcError as e:
                    # Calls that reach the server after SIGTERM are refused
                    # (UNAVAILABLE) or cancelled before a handler ran (CANCELLED);
                    # anything else means a call was broken mid-flight.
                    if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                        errors.append(e.code())
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            server.proc.send_signal(signal.SIGTERM)
            result = fut.result(timeout=120)
        finally:
            stop.set()  # whatever happened: the threads must not keep the test alive
            for t in threads:
                t.join()
        self.assertEqual(result.imported, n)
        self.assertEqual(server.proc.wait(timeout=30), 0, server.log())
        self.assertEqual(errors, [])
        self.assertIn('"msg":"stopped"', server.log())


    def test_sighup_and_a_closed_log_pipe_do_not_stop_the_server(self):
        # Log rotation and `systemctl reload` send SIGHUP; a restarted log collector
        # closes the pipe the server writes its log to. Either used to end the
        # process at once (exit 129 or 141): no drain, uncommitted audit events lost.
        d = tempfile.mkdtemp(prefix="iotauth-signals-")
        proc = subprocess.Popen([h.runfile("services/server/iotauthd"), "--data_dir=" + d,
                                 "--set=grpc.address=127.0.0.1:0", "--set=metrics.address="],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port = None
        deadline = time.time() + 30
        while port is None and time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if b'"msg":"serving"' in line:
                port = int(json.loads(line)["grpc_port"])
        self.assertIsNotNone(port, "server did not start")
        proc.stderr.close()  # the log reader goes away
        server = h.Server(data_dir=d)
        server.grpc_port = port
        try:
            for _ in range(3):
                proc.send_signal(signal.SIGHUP)  # each logs a line into the closed pipe
                time.sleep(0.2)
                self.assertIsNone(proc.poll(), "the server exited with %s" % proc.returncode)
                self.assertEqual(health_status(server.channel(role=None)), 1)
            # Admin changes log and audit too; the server carries on.
            h.call(server.channel(role="admin"), "iotauth.registry.v1.DeviceRegistry/CreateTenant",
                   {"tenant": {"id": "pipe", "hub_host": "pipe.example.net"}})
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
        self.assertEqual(rc, 0)


class ConnectionFloodTest(unittest.TestCase):
    """Anyone who reaches the port can open TCP connections, before any TLS or
    credential. In gRPC 1.51 the first accept() that runs out of file descriptors
    stops the listener for good: the server used to stay up, deaf to every new
    gateway, with the connections piling up in the kernel's queue."""

    @staticmethod
    def start(soft, hard):
        d = tempfile.mkdtemp(prefix="iotauth-flood-")
        server = h.Server(data_dir=d, args=["--set=shutdown.grace_period=2s"])
        server.log_file = open(server.log_path, "wb")

        def limits():
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        server.proc = subprocess.Popen([server.binary] + server.args, stdout=subprocess.DEVNULL,
                                       stderr=server.log_file, preexec_fn=limits)
        deadline = time.time() + 30
        while server.grpc_port is None and time.time() < deadline:
            for line in server.log().splitlines():
                if '"msg":"serving"' in line:
                    server.grpc_port = int(json.loads(line)["grpc_port"])
            time.sleep(0.05)
        if server.grpc_port is None:
            raise AssertionError("server did not start:\n" + server.log())
        return server

    @staticmethod
    def flood(port, n=300):
        socks = []
        for _ in range(n):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        return socks

    def test_the_soft_limit_is_raised_to_the_hard_one(self):
        hard = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        server = self.start(120, hard)
        with open("/proc/%d/limits" % server.proc.pid) as f:
            files = [l.split() for l in f if l.startswith("Max open files")][0]
        self.assertEqual(files[3:5], [str(hard), str(hard)])
        socks = self.flood(server.grpc_port)
        try:
            self.assertEqual(len(socks), 300)
            self.assertEqual(health_status(server.channel(role=None)), 1)
        finally:
            for s in socks:
                s.close()
        self.assertEqual(server.stop(), 0, server.log())

    def test_a_deaf_listener_drains_and_exits_for_a_restart(self):
        server = self.start(120, 120)
        socks = self.flood(server.grpc_port)
        try:
            rc = server.proc.wait(timeout=30)
        finally:
            for s in socks:
                s.close()
        self.assertEqual(rc, 3, server.log())
        log = server.log()
        self.assertIn("Failed accept4: Too many open files", log)
        self.assertIn("the gRPC listener stopped accepting connections", log)
        self.assertIn('"msg":"stopped"', log)
        # The data it holds is intact: the next start serves.
        again = h.Server(data_dir=server.data_dir).start()
        self.assertEqual(health_status(again.channel(role=None)), 1)
        self.assertEqual(again.stop(), 0, again.log())

if __name__ == "__main__":
    unittest.main(verbosity=2)
