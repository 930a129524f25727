"""The README, executed: its quickstart runs as written against a real iotauthd, and
its configuration table matches the configuration the server actually has.

- QuickstartTest extracts every ```sh block of the README's "Quickstart" section and
  runs them with bash (`set -euo pipefail`, aliases on) in a scratch directory laid
  out like a checkout after `tools/run.sh`: `bazel-bin/clients/iotauthctl/iotauthctl`,
  `.tools/npm/node_modules/.bin/buf` and `iotauth-data` (the running server's data
  directory, with its development PKI). Only the two fixed ports are rewritten to the
  server's ephemeral ones, and the test fails if either text is no longer in the
  README. Every command must succeed; `authenticate` exits 4 on a deny, so the
  allows the README promises are checked by the exit status. After each block the
  test checks what the README's comments promise: the old token is denied after the
  key rotation, and the revoked certificate is denied within a second.
- ConfigTableTest checks that every configuration key (from the descriptor set) has
  a row in the README's configuration table, that each row's environment variable
  is the one the server reads, and that each default the server prints
  (`iotauthd --print_config`) is the default the table states.
"""

import json
import os
import re
import subprocess
import tempfile
import time
import unittest

from iotauth_harness import Server, find_buf, runfile, schema

ROOT = os.environ.get("IOTAUTH_ROOT") or os.path.join(os.path.dirname(__file__), "..", "..")


def readme():
    for cand in (runfile("README.md"), os.path.join(ROOT, "README.md")):
        if os.path.exists(cand):
            with open(cand, encoding="utf-8") as f:
                return f.read()
    raise RuntimeError("README.md not found")


def section(text, title):
    """The body of the `## title` section."""
    m = re.search(r"^## %s\n(.*?)(?=^## |\Z)" % re.escape(title), text, re.S | re.M)
    if not m:
        raise AssertionError("README has no '## %s' section" % title)
    return m.group(1)


def sh_blocks(text):
    return re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M)


class QuickstartTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="iotauth-readme-")
        data_dir = os.path.join(cls.work, "iotauth-data")
        os.makedirs(data_dir)
        # Development defaults, as tools/run.sh starts it: dev PKI TLS, roles from OU.
        cls.server = Server(data_dir=data_dir).start()
        links = {
            "bazel-bin/clients/iotauthctl/iotauthctl": runfile("clients/iotauthctl/iotauthctl"),
            ".tools/npm/node_modules/.bin/buf": find_buf(),
        }
        for rel, target in links.items():
            path = os.path.join(cls.work, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(os.path.abspath(target), path)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def run_bash(self, script, name):
        env = dict(os.environ)
        # iotauthctl's default address is localhost:50051; the server is elsewhere.
        env["IOTAUTH_ADDRESS"] = self.server.address
        env.pop("IOTAUTH_DATA_DIR", None)
        prelude = "set -euo pipefail\nshopt -s expand_aliases\nset -x\n"
        p = subprocess.run(["bash", "-c", prelude + script], cwd=self.work, env=env,
                           capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            self.fail("%s failed (exit %d)\n--- stdout\n%s\n--- stderr (bash -x trace)\n%s\n"
                      "--- server log (tail)\n%s" % (name, p.returncode, p.stdout[-4000:],
                                                     p.stderr[-6000:],
                                                     self.server.log()[-3000:]))
        return p

    def test_quickstart_runs_as_written(self):
        text = section(readme(), "Quickstart")
        blocks = sh_blocks(text)
        self.assertGreaterEqual(len(blocks), 2, "the quickstart has its SAS and X.509 blocks")
        ports = {
            "https://localhost:50051/": "https://%s/" % self.server.address,
            "localhost:9464/metrics": "127.0.0.1:%d/metrics" % self.server.metrics_port,
        }
        joined = "\n".join(blocks)
        for old in ports:
            self.assertIn(old, joined, "the README no longer says %r: update this test" % old)

        def localize(block):
            for old, new in ports.items():
                block = block.replace(old, new)
            return block

        gateway = ("iotauthctl --cert iotauth-data/pki/gateway.pem "
                   "--key iotauth-data/pki/gateway.key authenticate")
        # What the comments of the first block promise: after the rotation the token
        # made before it is denied (exit 4), for a bad signature.
        sas_checks = """
set +e
out=$(%s --client_id sensor-1 --sas_token "$TOKEN" 2>&1); rc=$?
set -e
echo "$out"
[[ $rc == 4 ]] || { echo "old token after regenerate-key: exit $rc, want 4 (denied)"; exit 1; }
grep -qi 'bad.signature' <<<"$out" || { echo "deny reason is not bad signature"; exit 1; }
""" % gateway
        # "within a second the same authenticate answers: deny, revoked"
        x509_checks = """
for i in $(seq 20); do
  set +e
  out=$(%s --client_id cam-1 --cert_chain cam-1.pem 2>&1); rc=$?
  set -e
  [[ $rc == 4 ]] && break
  sleep 0.05
done
echo "$out"
[[ $rc == 4 ]] || { echo "revoked certificate: exit $rc, want 4 (denied)"; exit 1; }
grep -qi 'revoked' <<<"$out" || { echo "deny reason is not revoked"; exit 1; }
""" % gateway
        script = localize(blocks[0]) + sas_checks + "\n".join(localize(b) for b in blocks[1:])
        script += x509_checks
        p = self.run_bash(script, "the README quickstart")
        # The buf curl call printed the decision as proto JSON.
        self.assertIn('"decision": "DECISION_ALLOW"', p.stdout)
        # `audit query` listed the device's decisions and the registry changes.
        self.assertIn("sensor-1", p.stdout)


class ConfigTableTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        table = section(readme(), "Configuration")
        cls.rows = []
        for line in table.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != 4 or not cells[0].startswith("`"):
                continue
            keys = re.findall(r"`([a-z0-9_.*\[\]]+)`", cells[0])
            cls.rows.append({"keys": keys, "default": cells[1], "env": cells[2], "line": line})
        binary = runfile("services/server/iotauthd")
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run([binary, "--print_config"], cwd=d, capture_output=True, text=True,
                               timeout=60, env={k: v for k, v in os.environ.items()
                                                if not k.startswith("IOTAUTH_")})
        if p.returncode != 0:
            raise RuntimeError("iotauthd --print_config failed: " + p.stderr)
        cls.printed = json.loads(p.stdout)

    def row_for(self, path):
        """The table row documenting `path` (a dotted key). Rows may name a key in
        short form after a slash (`grpc.tls.cert_file` / `key_file`), a repeated
        message as `auth.cert_roles[]`, or a whole message as `upstream.*`."""
        for row in self.rows:
            keys = row["keys"]
            for i, k in enumerate(keys):
                full = k
                if i > 0 and "." not in k:  # `key_file` after `grpc.tls.cert_file`
                    full = keys[0].rsplit(".", 1)[0] + "." + k
                if full.rstrip("[]") == path:
                    return row
                if full.endswith(".*") and path.startswith(full[:-1]):
                    return row
        return None

    def leaf_paths(self):
        """(dotted path, field) of every configuration leaf; repeated messages count
        as one leaf, like Durations."""
        pool = schema().pool
        out = []

        def walk(desc, prefix):
            for f in desc.fields:
                path = prefix + f.name
                if (f.type == f.TYPE_MESSAGE and f.label != f.LABEL_REPEATED
                        and f.message_type.full_name != "google.protobuf.Duration"):
                    walk(f.message_type, path + ".")
                else:
                    out.append((path, f))

        walk(pool.FindMessageTypeByName("iotauth.config.v1.ServerConfig"), "")
        return out

    def test_every_key_has_a_row(self):
        missing = [p for p, _ in self.leaf_paths() if self.row_for(p) is None]
        self.assertEqual(missing, [], "configuration keys with no row in the README table")

    def test_environment_names(self):
        for path, f in self.leaf_paths():
            row = self.row_for(path)
            if row is None or "(file only)" in row["env"] or path.startswith("upstream."):
                continue
            if row["keys"][0].rstrip("[]") != path:
                continue  # a second key of a combined row: its variable is elided (...)
            want = "IOTAUTH_" + path.upper().replace(".", "__")
            self.assertIn("`%s`" % want, row["env"], row["line"])

    def test_defaults_match_print_config(self):
        def flatten(obj, prefix=""):
            for k, v in obj.items():
                if isinstance(v, dict):
                    yield from flatten(v, prefix + k + ".")
                else:
                    yield prefix + k, v

        def seconds(s):
            m = re.fullmatch(r"(\d+(?:\.\d+)?)s", s)
            return float(m.group(1)) if m else None

        checked = 0
        for path, value in flatten(self.printed):
            row = self.row_for(path)
            self.assertIsNotNone(row, "%s (printed by --print_config) has no README row" % path)
            cell = row["default"]
            m = re.match(r"`([^`]*)`", cell)
            self.assertIsNotNone(m, "%s: the default cell states no value: %s" % (path, row["line"]))
            stated = m.group(1)
            if isinstance(value, bool):
                self.assertEqual(stated, "true" if value else "false", row["line"])
            elif isinstance(value, int):
                self.assertEqual(stated.replace(",", ""), str(value), row["line"])
            elif isinstance(value, str) and seconds(value) is not None:
                self.assertEqual(seconds(stated), seconds(value), row["line"])
            elif isinstance(value, str) and value.startswith("TLS_MODE_"):
                self.assertEqual(stated, value[len("TLS_MODE_"):].lower(), row["line"])
            else:
                self.assertEqual(stated, str(value), row["line"])
            checked += 1
        self.assertGreater(checked, 15)


if __name__ == "__main__":
    unittest.main(verbosity=2)
