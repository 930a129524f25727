"""The contracts brokers and gateways already speak, over the wire: this test
plays EMQX (emqx.exhook.v2.HookProvider) and Envoy (envoy.service.auth.v3
Authorization/Check) against the real all-in-one server with Debian's grpcio."""

import base64
import functools
import hashlib
import hmac
import time
import unittest
import urllib.parse

import iotauth_harness as h

REG = "iotauth.registry.v1.DeviceRegistry/"
HUB = "gw.example.net"


def sas_token(device, key_b64, expiry):
    sr = urllib.parse.quote("%s/devices/%s" % (HUB, device), safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key_b64), ("%s\n%d" % (sr, expiry)).encode(),
                                    hashlib.sha256).digest()).decode()
    return "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, urllib.parse.quote(sig, safe=""), expiry)


class GatewayContractsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server().start()
        admin = cls.server.channel("admin")
        h.call(admin, REG + "CreateTenant", {"tenant": {"id": "gw", "hub_host": HUB}})
        h.call(admin, REG + "CreateProduct", {"product": {
            "tenant_id": "gw", "product_key": "pk-gw", "allowed_credential_types": ["CREDENTIAL_TYPE_SAS"],
            "default_rules": [{"effect": "RULE_EFFECT_ALLOW", "action": "RULE_ACTION_ALL",
                               "topic_filter": "devices/${device}/#"}]}})
        dev = h.to_dict(h.call(admin, REG + "CreateDevice", {
            "device": {"tenant_id": "gw", "device_id": "cam-1", "product_key": "pk-gw"}, "generate_keys": True}))
        cls.key = dev["credentials"]["symmetric_key"]["primary_key"]
        cls.token = sas_token("cam-1", cls.key, int(time.time()) + 600)
        cls.gw = cls.server.channel("gateway")
        time.sleep(0.3)  # registry -> identity mirror

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, cls.server.log()

    def client_info(self, password):
        return {"node": "emqx@127.0.0.1", "clientid": "cam-1", "username": "%s/cam-1/?api-version=2021-04-12" % HUB,
                "password": base64.b64encode(password.encode()).decode(), "peerhost": "198.51.100.9",
                "sockport": 8883, "protocol": "mqtt"}

    def test_emqx_exhook(self):
        loaded = h.to_dict(h.call(self.gw, "emqx.exhook.v2.HookProvider/OnProviderLoaded",
                                  {"broker": {"version": "5.8.0"}}))
        names = [hk["name"] for hk in loaded["hooks"]]
        self.assertIn("client.authenticate", names)
        self.assertIn("client.authorize", names)
        ok = h.to_dict(h.call(self.gw, "emqx.exhook.v2.HookProvider/OnClientAuthenticate",
                              {"clientinfo": self.client_info(self.token)}))
        self.assertEqual(ok.get("type"), "STOP_AND_RETURN")
        self.assertTrue(ok.get("bool_result"))
        at = self.token.index("sig=") + 4
        tampered = self.token[:at] + ("A" if self.token[at] != "A" else "B") + self.token[at + 1:]
        bad = h.to_dict(h.call(self.gw, "emqx.exhook.v2.HookProvider/OnClientAuthenticate",
                               {"clientinfo": self.client_info(tampered)}))
        self.assertEqual(bad.get("type"), "STOP_AND_RETURN")
        self.assertFalse(bad.get("bool_result", False))
        # Re-authenticate with the good token so the session holds the identity.
        h.call(self.gw, "emqx.exhook.v2.HookProvider/OnClientAuthenticate", {"clientinfo": self.client_info(self.token)})
        pub_own = h.to_dict(h.call(self.gw, "emqx.exhook.v2.HookProvider/OnClientAuthorize", {
            "clientinfo": self.client_info(self.token), "type": "PUBLISH", "topic": "devices/cam-1/telemetry"}))
        self.assertTrue(pub_own.get("bool_result"))
        pub_other = h.to_dict(h.call(self.gw, "emqx.exhook.v2.HookProvider/OnClientAuthorize", {
            "clientinfo": self.client_info(self.token), "type": "PUBLISH", "topic": "devices/cam-2/telemetry"}))
        self.assertFalse(pub_other.get("bool_result", False))
        # A stranger who fails to connect with the device's client id from elsewhere
        # does not cut the connected device off, and gets nothing.
        stranger = dict(self.client_info(tampered), peerhost="203.0.113.50", peerport=41000)
        refused = h.to_dict(h.call(self.gw, "emqx.exhook.v2.HookProvider/OnClientAuthenticate",
                                   {"clientinfo": stranger}))
        self.assertFalse(refused.get("bool_result", False))
        still = h.to_dict(h.call(self.gw, "emqx.exhook.v2.HookProvider/OnClientAuthorize", {
            "clientinfo": self.client_info(self.token), "type": "PUBLISH", "topic": "devices/cam-1/telemetry"}))
        self.assertTrue(still.get("bool_result"))
        as_stranger = h.to_dict(h.call(self.gw, "emqx.exhook.v2.HookProvider/OnClientAuthorize", {
            "clientinfo": stranger, "type": "PUBLISH", "topic": "devices/cam-1/telemetry"}))
        self.assertFalse(as_stranger.get("bool_result", False))
        # The session table is visible to Prometheus: one client held, none evicted.
        text = self.server.metrics()
        self.assertEqual(h.promtool_check(text).returncode, 0, h.promtool_check(text).stdout)
        self.assertEqual(h.metric_value(text, "iotauth_exhook_sessions"), 1)
        self.assertEqual(h.metric_value(text, "iotauth_exhook_session_evictions_total"), 0)
        # The topic decisions above are counted (the stranger's never reached a decision).
        authz = functools.partial(h.metric_value, text, "iotauth_identity_authorizations_total")
        self.assertGreaterEqual(authz(decision="allow", action="publish", basis="rule"), 2)
        self.assertGreaterEqual(authz(decision="deny", action="publish"), 1)
        self.assertEqual(authz(decision="deny", action="subscribe", basis="device"), 0)

    def test_envoy_ext_authz(self):
        def check(headers):
            return h.to_dict(h.call(self.gw, "envoy.service.auth.v3.Authorization/Check", {
                "attributes": {"request": {"http": {"method": "POST", "path": "/devices/cam-1/messages",
                                                    "headers": headers}}}}))
        ok = check({"authorization": self.token})
        self.assertEqual(ok.get("status", {}).get("code", 0), 0)
        hdrs = {x["header"]["key"]: x["header"].get("value") for x in ok["ok_response"].get("headers", [])}
        self.assertEqual(hdrs.get("x-iotauth-device"), "cam-1")
        self.assertEqual(hdrs.get("x-iotauth-tenant"), "gw")
        at = self.token.index("sig=") + 4
        denied = check({"authorization": self.token[:at] + ("A" if self.token[at] != "A" else "B")
                        + self.token[at + 1:]})
        self.assertNotEqual(denied.get("status", {}).get("code", 0), 0)
        self.assertEqual(denied["denied_response"]["status"]["code"], "Unauthorized")
        missing = check({})
        self.assertNotEqual(missing.get("status", {}).get("code", 0), 0)
        malformed = check({"authorization": "SharedAccessSignature sr=%%%zz&sig="})
        self.assertNotEqual(malformed.get("status", {}).get("code", 0), 0)
        self.assertIn(malformed["denied_response"]["status"]["code"], ("Unauthorized", "Forbidden"))

    def test_emqx_malformed(self):
        # A CONNECT without credentials and one with a garbage password are refused.
        for pw in ("", "\x00\xff garbage"):
            r = h.to_dict(h.call(self.gw, "emqx.exhook.v2.HookProvider/OnClientAuthenticate",
                                 {"clientinfo": self.client_info(pw)}))
            self.assertEqual(r.get("type"), "STOP_AND_RETURN")
            self.assertFalse(r.get("bool_result", False))


if __name__ == "__main__":
    unittest.main(verbosity=2)
