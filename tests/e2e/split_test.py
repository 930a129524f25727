"""Split mode: registry_server, audit_server and identity_server as separate
processes. The identity service mirrors the registry over the network and streams
its audit events to the audit service; a change made at the registry reaches the
identity service's decisions within a second."""

import base64
import hashlib
import hmac
import os
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse

import grpc
import iotauth_harness as h

REG = "iotauth.registry.v1.DeviceRegistry/"
HUB = "split.example.net"


def sas_token(device, key_b64, expiry):
    sr = urllib.parse.quote("%s/devices/%s" % (HUB, device), safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key_b64), ("%s\n%d" % (sr, expiry)).encode(),
                                    hashlib.sha256).digest()).decode()
    return "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, urllib.parse.quote(sig, safe=""), expiry)


def launch(binary, name, data_dir=None, args=()):
    """Starts services/server/<binary>. The processes share the data dir's development
    PKI (each opens only its own database), so each gets its own log file, <name>.log."""
    server = h.Server("services/server/" + binary, data_dir=data_dir, args=list(args))
    server.log_path = os.path.join(server.data_dir, name + ".log")
    return server.start()


def launch_identity(name, registry, audit, audit_address=None, args=()):
    """The identity process, fed by `registry`, sending its events to `audit` (at
    `audit_address` when the test fixed one, to restart the audit service there)."""
    return launch("identity_server", name, audit.data_dir,
                  ["--set=registry_address=" + registry.address,
                   "--set=audit.remote_address=" + (audit_address or audit.address)] + list(args))


def register_d1(admin):
    """Tenant sp, product pk-sp (SAS) and device d1 with generated keys, through a
    registry `admin` channel; returns d1's primary key."""
    h.call(admin, REG + "CreateTenant", {"tenant": {"id": "sp", "hub_host": HUB}})
    h.call(admin, REG + "CreateProduct", {"product": {"tenant_id": "sp", "product_key": "pk-sp",
                                                      "allowed_credential_types": ["CREDENTIAL_TYPE_SAS"]}})
    dev = h.to_dict(h.call(admin, REG + "CreateDevice", {
        "device": {"tenant_id": "sp", "device_id": "d1", "product_key": "pk-sp"}, "generate_keys": True}))
    return dev["credentials"]["symmetric_key"]["primary_key"]


def wait_until(test, pred, what, timeout=30, step=0.1):
    """Polls `pred` every `step` seconds; fails `test` with `what` after `timeout`."""
    deadline = time.time() + timeout
    while not pred():
        test.assertLess(time.time(), deadline, what)
        time.sleep(step)


def auth_events(reader):
    """Tenant sp's authentication events, through an audit `reader` channel."""
    return h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Query",
                            {"tenant_id": "sp", "type": "EVENT_TYPE_AUTHENTICATION"})).get("events", [])


class SplitModeTest(unittest.TestCase):
    def test_three_processes(self):
        servers = []
        try:
            audit = launch("audit_server", "audit")
            servers.append(audit)
            registry = launch("registry_server", "registry", audit.data_dir,
                             ["--set=audit.remote_address=" + audit.address])
            servers.append(registry)
            identity = launch_identity("identity", registry, audit)
            servers.append(identity)

            admin = registry.channel("admin")
            token = sas_token("d1", register_d1(admin), int(time.time()) + 600)
            req = {"request_id": "split-1", "credential": {"sas": {"token": token}}}
            gw = identity.channel("gateway")
            start = time.time()
            while h.to_dict(h.call(gw, "iotauth.identity.v1.IdentityService/Authenticate", req))["decision"] != "DECISION_ALLOW":
                self.assertLess(time.time() - start, 1.0, "registry change not mirrored within 1s")
                time.sleep(0.02)
            print("registry -> identity over the network in %.3fs" % (time.time() - start))
            # The decision reaches the audit service (Ingest from the identity process).
            reader = audit.channel("reader")
            start = time.time()
            while True:
                events = auth_events(reader)
                if any(e.get("request_id") == "split-1" for e in events):
                    break
                self.assertLess(time.time() - start, 5.0, "audit event not ingested")
                time.sleep(0.05)
            # Registry mutations were audited remotely too.
            events = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Query",
                                      {"tenant_id": "sp", "type": "EVENT_TYPE_ADMIN_MUTATION"})).get("events", [])
            self.assertTrue(events)
            # Disable at the registry: denied at the identity service within a second.
            h.call(admin, REG + "SetDeviceStatus", {"tenant_id": "sp", "device_id": "d1",
                                                    "status": "DEVICE_STATUS_DISABLED"})
            start = time.time()
            while h.to_dict(h.call(gw, "iotauth.identity.v1.IdentityService/Authenticate", req)).get(
                    "deny_reason") != "DENY_REASON_DEVICE_DISABLED":
                self.assertLess(time.time() - start, 1.0, "disable not mirrored within 1s")
                time.sleep(0.02)

            # The audit service is down when the identity process stops: the decisions it
            # could not hand over are spooled, and the next start delivers them.
            self.assertEqual(audit.stop(), 0, audit.log())
            servers.remove(audit)
            for i in range(3):
                h.call(gw, "iotauth.identity.v1.IdentityService/Authenticate",
                       dict(req, request_id="spooled-%d" % i))
            self.assertEqual(identity.stop(), 0, identity.log())
            servers.remove(identity)
            spool = os.path.join(audit.data_dir, "audit-remote.identity.spool")
            self.assertTrue(os.path.exists(spool), identity.log())
            self.assertIn("spooled", identity.log())
            audit = launch("audit_server", "audit2", audit.data_dir)
            servers.append(audit)
            identity = launch_identity("identity2", registry, audit)
            servers.append(identity)
            reader = audit.channel("reader")
            start = time.time()
            while True:
                events = auth_events(reader)
                got = sorted(e.get("request_id") for e in events if e.get("request_id", "").startswith("spooled-"))
                if got == ["spooled-0", "spooled-1", "spooled-2"]:
                    break
                self.assertLess(time.time() - start, 10.0, "spooled events not delivered: %s" % got)
                time.sleep(0.05)
            start = time.time()
            while os.path.exists(spool):  # removed once the audit service acknowledged them
                self.assertLess(time.time() - start, 5.0, "spool not removed")
                time.sleep(0.05)
            self.assertTrue(h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Verify", {})).get("ok"))
        finally:
            for s in reversed(servers):
                rc = s.stop()
                self.assertEqual(rc, 0, s.log())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StartedTogetherTest(unittest.TestCase):
    def test_three_processes_started_at_once_on_a_fresh_data_dir(self):
        # As a service manager or compose file starts them: no order, one new data
        # dir. They share its development PKI; the ones that call out (registry to
        # audit, identity to both) must not read it before anyone has made it, and
        # they must not make one each.
        data_dir = tempfile.mkdtemp(prefix="iotauth-together-")
        ports = {name: free_port() for name in ("audit", "registry", "identity")}
        addr = {name: "127.0.0.1:%d" % port for name, port in ports.items()}
        specs = {
            "audit": ("audit_server", []),
            "registry": ("registry_server", ["--set=audit.remote_address=" + addr["audit"]]),
            "identity": ("identity_server", ["--set=registry_address=" + addr["registry"],
                                             "--set=audit.remote_address=" + addr["audit"]]),
        }
        servers = {}
        for name, (binary, args) in specs.items():
            server = h.Server("services/server/" + binary, data_dir=data_dir,
                              args=args + ["--set=grpc.address=" + addr[name]])
            server.log_path = os.path.join(data_dir, name + ".log")
            server.log_file = open(server.log_path, "wb")
            servers[name] = server
        try:
            for server in servers.values():  # all at once, then wait for each
                server.proc = subprocess.Popen([server.binary] + server.args,
                                               stdout=subprocess.PIPE, stderr=server.log_file,
                                               env=server.env)
            for name, server in servers.items():
                server.grpc_port = ports[name]
                deadline = time.time() + 30
                while '"msg":"serving"' not in server.log():
                    self.assertIsNone(server.proc.poll(), "%s exited:\n%s" % (name, server.log()))
                    self.assertLess(time.time(), deadline, server.log())
                    time.sleep(0.05)
            ch = servers["identity"].channel(role=None)
            deadline = time.time() + 20
            while True:
                status = h.to_dict(h.call(ch, "grpc.health.v1.Health/Check", {})).get("status")
                if status == "SERVING" or time.time() > deadline:
                    break
                time.sleep(0.1)
            self.assertEqual(status, "SERVING", servers["identity"].log())
            # One PKI: the registry's certificate verifies against the CA the others use.
            h.call(servers["registry"].channel("admin"), "iotauth.registry.v1.DeviceRegistry/CreateTenant",
                   {"tenant": {"id": "tg", "hub_host": "tg.example.net"}})
        finally:
            for server in servers.values():
                if server.proc:
                    server.stop()


class AuditGoneTest(unittest.TestCase):
    def test_not_serving_while_the_audit_service_is_gone_and_events_are_lost(self):
        # The identity process holds what the audit service has not acknowledged in
        # a resend queue (here 4 events). Once that is full, events are lost: it
        # reports NOT_SERVING until the audit service acknowledges again, and the
        # loss is one GAP event there.
        self.gone("not_serving")

    def test_refuse_while_the_audit_service_is_gone(self):
        # As above, and from then on Authenticate is refused UNAVAILABLE (nothing is
        # decided unrecorded) until the new audit service acknowledges.
        self.gone("refuse")

    def test_the_registry_refuses_changes_while_the_audit_service_is_gone(self):
        # The registry with audit.when_unwritable=refuse, its resend queue 4 events.
        # Once the queue is full, a change is refused whole: it is not made, so it
        # cannot reach the identity service's mirror either, while reads (the
        # mirror's too) are still answered. After the audit service is back, the
        # same change is made and reaches Authenticate within a second.
        audit_addr = "127.0.0.1:%d" % free_port()
        servers = []
        try:
            audit = launch("audit_server", "audit", args=["--set=grpc.address=" + audit_addr])
            servers.append(audit)
            registry = launch("registry_server", "registry", audit.data_dir,
                              ["--set=audit.remote_address=" + audit_addr,
                               "--set=audit.queue_capacity=4", "--set=audit.when_unwritable=refuse"])
            servers.append(registry)
            identity = launch_identity("identity", registry, audit, audit_addr)
            servers.append(identity)
            admin = registry.channel("admin")
            token = sas_token("d1", register_d1(admin), int(time.time()) + 600)
            gw = identity.channel("gateway")

            def decision():
                resp = h.to_dict(h.call(gw, "iotauth.identity.v1.IdentityService/Authenticate",
                                        {"request_id": "r", "credential": {"sas": {"token": token}}}))
                return resp["decision"], resp.get("deny_reason")

            wait_until(self, lambda: decision()[0] == "DECISION_ALLOW", "d1 mirrored", step=0.02)
            disable = {"tenant_id": "sp", "device_id": "d1", "status": "DEVICE_STATUS_DISABLED"}

            self.assertEqual(audit.stop(), 0, audit.log())
            servers.remove(audit)
            made, refused_id = 0, None
            while refused_id is None:
                self.assertLess(made, 100, "no change refused after 100")
                device_id = "filler-%d" % made
                try:
                    h.call(admin, REG + "CreateDevice", {"device": {
                        "tenant_id": "sp", "device_id": device_id, "product_key": "pk-sp"}})
                    made += 1
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e.details())
                    self.assertEqual(h.error_reason(e), "AUDIT_UNWRITABLE", e.details())
                    refused_id = device_id
            with self.assertRaises(grpc.RpcError) as cm:
                h.call(admin, REG + "SetDeviceStatus", disable)
            self.assertEqual(h.error_reason(cm.exception), "AUDIT_UNWRITABLE")
            # Nothing half-written: the refused device does not exist, d1 is still
            # enabled at the registry (reads are answered) and at the identity service.
            with self.assertRaises(grpc.RpcError) as cm:
                h.call(admin, REG + "GetDevice", {"tenant_id": "sp", "device_id": refused_id})
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
            got = h.to_dict(h.call(admin, REG + "GetDevice", {"tenant_id": "sp", "device_id": "d1"}))
            self.assertEqual(got.get("device_id"), "d1", got)
            self.assertNotEqual(got.get("status"), "DEVICE_STATUS_DISABLED", got)
            deadline = time.time() + 1.5
            while time.time() < deadline:
                self.assertEqual(decision(), ("DECISION_ALLOW", None))
                time.sleep(0.1)

            audit = launch("audit_server", "audit2", audit.data_dir, ["--set=grpc.address=" + audit_addr])
            servers.append(audit)
            wait_until(self, lambda: h.metric_value(registry.metrics(), "iotauth_audit_writable") == 1,
                       "registry writable again (acknowledged)", step=0.02)
            h.call(admin, REG + "SetDeviceStatus", disable)
            start = time.time()
            wait_until(self, lambda: decision() == ("DECISION_DENY", "DENY_REASON_DEVICE_DISABLED"),
                       "disable mirrored", timeout=1.0, step=0.02)
            print("%d changes made while the audit service was gone, then refused; the disable "
                  "made after recovery reached Authenticate in %.3fs" % (made, time.time() - start))
            reader = audit.channel("reader")
            mutations = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Query", {
                "tenant_id": "sp", "type": "EVENT_TYPE_ADMIN_MUTATION"})).get("events", [])
            self.assertTrue(any(e.get("device_id") == "d1" and e.get("reason") == "SetDeviceStatus"
                                and e.get("outcome") == "OUTCOME_SUCCESS" for e in mutations), mutations)
            self.assertFalse(any(e.get("device_id") == refused_id for e in mutations), refused_id)
            self.assertTrue(h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Verify", {})).get("ok"))
        finally:
            for s in reversed(servers):
                self.assertEqual(s.stop(), 0, s.log())

    def gone(self, when_unwritable):
        audit_addr = "127.0.0.1:%d" % free_port()
        servers = []
        try:
            audit = launch("audit_server", "audit", args=["--set=grpc.address=" + audit_addr])
            servers.append(audit)
            registry = launch("registry_server", "registry", audit.data_dir,
                              ["--set=audit.remote_address=" + audit_addr])
            servers.append(registry)
            identity = launch_identity("identity", registry, audit, audit_addr,
                                       ["--set=audit.queue_capacity=4",
                                        "--set=audit.when_unwritable=" + when_unwritable])
            servers.append(identity)
            h.call(registry.channel("admin"), REG + "CreateTenant", {"tenant": {"id": "gone", "hub_host": HUB}})
            public = identity.channel(role=None)

            def health():
                return h.to_dict(h.call(public, "grpc.health.v1.Health/Check", {})).get("status")

            def writable():
                return h.metric_value(identity.metrics(), "iotauth_audit_writable")

            wait_until(self, lambda: health() == "SERVING", "identity SERVING")
            gw = identity.channel("gateway")
            token = sas_token("ghost", "cGFzc3dvcmQ=", int(time.time()) + 600)
            self.assertEqual(audit.stop(), 0, audit.log())
            servers.remove(audit)
            def authenticate(i):
                return h.call(gw, "iotauth.identity.v1.IdentityService/Authenticate",
                              {"tenant_id": "gone", "request_id": "gone-%d" % i,
                               "credential": {"sas": {"token": token}}})

            def refused(i):
                with self.assertRaises(grpc.RpcError) as cm:
                    authenticate(i)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, cm.exception.details())
                self.assertIn("audit.when_unwritable=refuse", cm.exception.details())

            sent = 0
            while writable() != 0:
                self.assertLess(sent, 100, "events not reported lost after 100 decisions")
                try:
                    resp = h.to_dict(authenticate(sent))
                except grpc.RpcError as e:
                    # Refused only with =refuse, once the loss is reported (the gauge
                    # is read after the call).
                    self.assertEqual(when_unwritable, "refuse", e)
                    self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e.details())
                    break
                self.assertEqual(resp["decision"], "DECISION_DENY")  # answered until then
                sent += 1
            self.assertEqual(health(), "NOT_SERVING")
            self.assertIn("audit: events cannot be recorded", identity.log())
            self.assertIn("the resend queue is full", identity.log())
            if when_unwritable == "refuse":
                refused(sent)
            audit = launch("audit_server", "audit2", audit.data_dir, ["--set=grpc.address=" + audit_addr])
            servers.append(audit)
            wait_until(self, lambda: writable() == 1, "identity writable again (acknowledged)")
            self.assertEqual(health(), "SERVING")
            if when_unwritable == "refuse":
                resp = h.to_dict(authenticate(sent))  # answered again
                self.assertEqual(resp["decision"], "DECISION_DENY")
            reader = audit.channel("reader")
            gaps = h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Query",
                                    {"type": "EVENT_TYPE_GAP"})).get("events", [])
            self.assertEqual(len(gaps), 1, gaps)
            dropped = int(gaps[0]["attributes"]["dropped_count"])
            print("%d decisions while the audit service was gone; %d lost, one GAP" % (sent, dropped))
            self.assertGreaterEqual(dropped, 1)
            self.assertTrue(h.to_dict(h.call(reader, "iotauth.audit.v1.AuditLog/Verify", {})).get("ok"))
        finally:
            for s in reversed(servers):
                self.assertEqual(s.stop(), 0, s.log())


class LoadingTest(unittest.TestCase):
    def test_not_serving_and_unavailable_until_the_registry_is_mirrored(self):
        # The registry is unreachable, so the identity service never finishes loading
        # its directory. Meanwhile it must report NOT_SERVING (a load balancer or a
        # Kubernetes probe keeps traffic away) and answer UNAVAILABLE, never a deny
        # from an empty directory.
        port = free_port()
        identity = h.Server("services/server/identity_server",
                            args=["--set=grpc.address=127.0.0.1:%d" % port,
                                  "--set=registry_address=127.0.0.1:%d" % free_port(),
                                  "--set=audit.disabled=true"])
        identity.grpc_port = port
        identity.log_file = open(identity.log_path, "wb")
        identity.proc = subprocess.Popen([identity.binary] + identity.args, stdout=subprocess.PIPE,
                                         stderr=identity.log_file, env=identity.env)
        try:
            deadline = time.time() + 20
            statuses = None
            while statuses is None:
                self.assertLess(time.time(), deadline, identity.log())
                self.assertIsNone(identity.proc.poll(), identity.log())
                try:
                    ch = identity.channel(role=None)
                    statuses = {svc: h.to_dict(h.call(ch, "grpc.health.v1.Health/Check",
                                                      {"service": svc}, timeout=2)).get("status")
                                for svc in ["", "iotauth.identity.v1.IdentityService",
                                            "emqx.exhook.v2.HookProvider"]}
                except (FileNotFoundError, grpc.RpcError):
                    time.sleep(0.1)
            self.assertEqual(statuses, {"": "NOT_SERVING",
                                        "iotauth.identity.v1.IdentityService": "NOT_SERVING",
                                        "emqx.exhook.v2.HookProvider": "NOT_SERVING"})
            gw = identity.channel("gateway")
            with self.assertRaises(grpc.RpcError) as err:
                h.call(gw, "iotauth.identity.v1.IdentityService/Authenticate", {"connect": {
                    "client_id": "d1", "username": HUB + "/d1/?api-version=2021-04-12",
                    "password": base64.b64encode(sas_token("d1", base64.b64encode(b"k" * 32).decode(),
                                                           int(time.time()) + 600).encode()).decode(),
                    "protocol": "PROTOCOL_MQTT"}})
            self.assertEqual(err.exception.code(), grpc.StatusCode.UNAVAILABLE, identity.log())
            self.assertIn("still loading", err.exception.details())
            # SIGTERM while still loading ends it at once, cleanly (it used to wait out
            # the 120 s start-up limit, past any orchestrator's grace period).
            start = time.time()
            self.assertEqual(identity.stop(timeout=20), 0, identity.log())
            self.assertLess(time.time() - start, 5.0, identity.log())
            self.assertIn("stopped during start-up", identity.log())
        finally:
            if identity.proc.poll() is None:
                identity.kill9()


if __name__ == "__main__":
    unittest.main(verbosity=2)
