"""Split mode, the registry away long enough for its change log to be pruned past the
identity service's cursor: on reconnect the identity service resyncs from a snapshot
without ever denying a device the registry still has, and ends exact (a device
deleted meanwhile is denied, one created meanwhile is allowed)."""

import base64
import hashlib
import hmac
import os
import time
import unittest
import urllib.parse

import grpc

import iotauth_harness as h

REG = "iotauth.registry.v1.DeviceRegistry/"
AUTH = "iotauth.identity.v1.IdentityService/Authenticate"
HUB = "resync.example.net"
RETENTION = "--set=storage.registry_change_retention=1s"  # pruned every second


def sas_token(device, key_b64, expiry):
    sr = urllib.parse.quote("%s/devices/%s" % (HUB, device), safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key_b64), ("%s\n%d" % (sr, expiry)).encode(),
                                    hashlib.sha256).digest()).decode()
    return "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, urllib.parse.quote(sig, safe=""), expiry)


def registry(data_dir, name, port=0):
    s = h.Server("services/server/registry_server", data_dir=data_dir,
                 args=[RETENTION, "--set=grpc.address=127.0.0.1:%d" % port,
                       "--set=audit.disabled=true"])
    s.log_path = os.path.join(s.data_dir, name + ".log")  # the processes share the data dir
    return s.start()


class ResyncTest(unittest.TestCase):
    def test_resync_after_the_change_log_was_pruned(self):
        servers = []
        try:
            reg1 = registry(None, "registry1")
            servers.append(reg1)
            data = reg1.data_dir
            identity = h.Server("services/server/identity_server", data_dir=data,
                                args=["--set=registry_address=" + reg1.address,
                                      "--set=audit.disabled=true"])
            identity.log_path = os.path.join(data, "identity.log")
            servers.append(identity.start())

            admin = reg1.channel("admin")
            h.call(admin, REG + "CreateTenant", {"tenant": {"id": "rs", "hub_host": HUB}})
            h.call(admin, REG + "CreateProduct", {"product": {
                "tenant_id": "rs", "product_key": "pk-rs",
                "allowed_credential_types": ["CREDENTIAL_TYPE_SAS"]}})
            keys = {}

            def create(admin_channel, device):
                d = h.to_dict(h.call(admin_channel, REG + "CreateDevice", {
                    "device": {"tenant_id": "rs", "device_id": device, "product_key": "pk-rs"},
                    "generate_keys": True}))
                keys[device] = d["credentials"]["symmetric_key"]["primary_key"]

            create(admin, "keep")
            create(admin, "gone")
            gw = identity.channel("gateway")
            expiry = int(time.time()) + 3600

            def decide(device):
                r = h.to_dict(h.call(gw, AUTH, {"credential": {"sas": {
                    "token": sas_token(device, keys[device], expiry)}}}))
                return r["decision"], r.get("deny_reason", "")

            start = time.time()
            while decide("keep")[0] != "DECISION_ALLOW" or decide("gone")[0] != "DECISION_ALLOW":
                self.assertLess(time.time() - start, 2.0, "devices not mirrored")
                time.sleep(0.02)
            cursor = h.to_dict(h.call(admin, REG + "GetChangeCursor", {}))["cursor"]

            # The registry goes away; the identity service keeps answering from its cache.
            self.assertEqual(reg1.stop(), 0, reg1.log())
            servers.remove(reg1)
            self.assertEqual(decide("keep")[0], "DECISION_ALLOW")

            # Meanwhile (another registry process on the same database, which the
            # identity service does not know): one device deleted, one created, and the
            # change log pruned past the identity service's cursor.
            reg2 = registry(data, "registry2")
            servers.append(reg2)
            admin2 = reg2.channel("admin")
            h.call(admin2, REG + "DeleteDevice", {"tenant_id": "rs", "device_id": "gone"})
            create(admin2, "new")
            start = time.time()
            while True:
                try:
                    next(iter(h.server_stream(admin2, REG + "WatchChanges", {"cursor": cursor},
                                              timeout=0.5)))
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.OUT_OF_RANGE:
                        break
                self.assertLess(time.time() - start, 10.0, "change log not pruned")
                time.sleep(0.2)
            self.assertEqual(reg2.stop(), 0, reg2.log())
            servers.remove(reg2)

            # The registry is back where the identity service expects it: it gets
            # CURSOR_EXPIRED, resyncs, and never denies "keep" on the way.
            reg3 = registry(data, "registry3", port=reg1.grpc_port)
            servers.append(reg3)
            start = time.time()
            while True:
                self.assertEqual(decide("keep"), ("DECISION_ALLOW", ""), identity.log())
                if (decide("gone") == ("DECISION_DENY", "DENY_REASON_UNKNOWN_DEVICE")
                        and decide("new")[0] == "DECISION_ALLOW"):
                    break
                self.assertLess(time.time() - start, 20.0, "no resync:\n" + identity.log())
                time.sleep(0.02)
            print("resynced %.2fs after the registry came back" % (time.time() - start))
            # The path taken: the expired cursor, then a new snapshot.
            self.assertIn("change cursor is older than the retained log", identity.log())
        finally:
            for s in reversed(servers):
                rc = s.stop()
                self.assertEqual(rc, 0, s.log())


if __name__ == "__main__":
    unittest.main(verbosity=2)
