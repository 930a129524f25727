"""X.509 end to end: the CLI's issuance flow (issuing CA, CSR made with the openssl
CLI, `cert issue`), proof of possession for an uploaded CA (`ca upload`,
`ca verification-code`, a proof certificate signed with openssl, `ca verify`),
Authenticate over Debian's python3-grpcio with the certificate chain, `cert
revoke` denied within a second, and a chain from an unregistered CA denied as
untrusted."""

import base64
import os
import subprocess
import tempfile
import time
import unittest

import iotauth_harness as h

REG = "iotauth.registry.v1.DeviceRegistry/"
AUTH = "iotauth.identity.v1.IdentityService/Authenticate"


def openssl(*args, cwd):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, "openssl %s: %s" % (args, p.stderr)
    return p.stdout


class X509E2ETest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server().start()
        cls.admin = cls.server.channel("admin")
        cls.gateway = cls.server.channel("gateway")
        cls.tmp = tempfile.mkdtemp(prefix="iotauth-x509-")
        cls.ctl_base = [h.runfile("clients/iotauthctl/iotauthctl"), "--address", cls.server.address,
                        "--data_dir", cls.server.data_dir]
        h.call(cls.admin, REG + "CreateTenant", {"tenant": {"id": "fab", "hub_host": "fab.example.net"}})
        h.call(cls.admin, REG + "CreateProduct", {"product": {
            "tenant_id": "fab", "product_key": "pk-x509", "allowed_credential_types": ["CREDENTIAL_TYPE_X509_CA"]}})
        for dev in ("robot-1", "robot-2"):
            h.call(cls.admin, REG + "CreateDevice", {"device": {
                "tenant_id": "fab", "device_id": dev, "product_key": "pk-x509", "status": "DEVICE_STATUS_ENABLED",
                "credentials": {"ca_signed_allowed": True}}})

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, cls.server.log()

    def ctl(self, *args):
        p = subprocess.run(self.ctl_base + list(args), capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, "iotauthctl %s: %s %s" % (args, p.stdout, p.stderr))
        return p.stdout

    def authenticate(self, chain_pem, device):
        return h.to_dict(h.call(self.gateway, AUTH, {"connect": {
            "client_id": device, "username": device,
            "peer_certificate_chain": [base64.b64encode(chain_pem.encode()).decode()]}}))

    def wait_for(self, pred, timeout, what):
        start = time.time()
        while not pred():
            self.assertLess(time.time() - start, timeout, what)
            time.sleep(0.02)
        return time.time() - start

    def test_issue_authenticate_revoke(self):
        self.ctl("ca", "create-issuing", "--tenant", "fab")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", "/CN=robot-1", "-keyout", "robot-1.key", "-out", "robot-1.csr", cwd=self.tmp)
        out = os.path.join(self.tmp, "robot-1.pem")
        self.ctl("cert", "issue", "--tenant", "fab", "--device", "robot-1",
                 "--csr", os.path.join(self.tmp, "robot-1.csr"), "--validity", "1d", "--out", out)
        with open(out) as f:
            chain = f.read()
        # The issued certificate verifies with the openssl CLI against its issuer.
        self.assertIn("BEGIN CERTIFICATE", chain)
        took = self.wait_for(lambda: self.authenticate(chain, "robot-1")["decision"] == "DECISION_ALLOW", 1.0,
                             "issued certificate not accepted within 1s")
        resp = self.authenticate(chain, "robot-1")
        self.assertEqual(resp["credential_type"], "CREDENTIAL_TYPE_X509_CA")
        self.assertEqual(resp["identity"]["device_id"], "robot-1")
        print("issued certificate accepted after %.3fs" % took)
        # The same certificate presented for another device: identity mismatch.
        other = self.authenticate(chain, "robot-2")
        self.assertEqual(other.get("deny_reason"), "DENY_REASON_IDENTITY_MISMATCH")
        # Revoke with the CLI: denied within a second.
        self.ctl("cert", "revoke", "--tenant", "fab", "--cert_file", out, "--reason", "keyCompromise")
        took = self.wait_for(lambda: self.authenticate(chain, "robot-1").get("deny_reason") == "DENY_REASON_REVOKED",
                             1.0, "revocation not effective within 1s")
        print("revocation effective after %.3fs" % took)

    def test_uploaded_ca_proof_of_possession_and_untrusted(self):
        t = self.tmp
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", "/CN=Fab Devices CA", "-days", "30", "-keyout", "fabca.key", "-out", "fabca.pem",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=t)
        up = self.ctl("ca", "upload", "--tenant", "fab", "--file", os.path.join(t, "fabca.pem"), "--json")
        import json
        ca_id = json.loads(up)["id"]
        # A device certificate from the CA is not trusted before proof of possession.
        with open(os.path.join(t, "ext.cnf"), "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=clientAuth\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", "/CN=robot-2", "-keyout", "robot-2.key", "-out", "robot-2.csr", cwd=t)
        openssl("x509", "-req", "-in", "robot-2.csr", "-CA", "fabca.pem", "-CAkey", "fabca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "robot-2.pem", cwd=t)
        with open(os.path.join(t, "robot-2.pem")) as f:
            leaf = f.read()
        time.sleep(0.3)
        self.assertEqual(self.authenticate(leaf, "robot-2").get("deny_reason"), "DENY_REASON_UNTRUSTED_ISSUER")
        # Proof of possession: a certificate whose CN is the code, signed by the CA key.
        code = self.ctl("ca", "verification-code", "--tenant", "fab", ca_id).strip()
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", "/CN=" + code, "-keyout", "proof.key", "-out", "proof.csr", cwd=t)
        openssl("x509", "-req", "-in", "proof.csr", "-CA", "fabca.pem", "-CAkey", "fabca.key",
                "-CAcreateserial", "-days", "1", "-out", "proof.pem", cwd=t)
        self.ctl("ca", "verify", "--tenant", "fab", ca_id, "--file", os.path.join(t, "proof.pem"))
        self.wait_for(lambda: self.authenticate(leaf, "robot-2")["decision"] == "DECISION_ALLOW", 1.0,
                      "verified CA not trusted within 1s")
        # Disable the CA: its devices are denied within a second.
        self.ctl("ca", "disable", "--tenant", "fab", ca_id)
        self.wait_for(lambda: self.authenticate(leaf, "robot-2")["decision"] == "DECISION_DENY", 1.0,
                      "disabled CA still trusted after 1s")
        # A chain from a CA never registered: untrusted.
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", "/CN=Rogue CA", "-days", "30", "-keyout", "rogue.key", "-out", "rogue.pem",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=t)
        openssl("x509", "-req", "-in", "robot-2.csr", "-CA", "rogue.pem", "-CAkey", "rogue.key",
                "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "rogue-leaf.pem", cwd=t)
        with open(os.path.join(t, "rogue-leaf.pem")) as f:
            rogue = f.read()
        self.assertEqual(self.authenticate(rogue, "robot-2").get("deny_reason"), "DENY_REASON_UNTRUSTED_ISSUER")


if __name__ == "__main__":
    unittest.main(verbosity=2)
