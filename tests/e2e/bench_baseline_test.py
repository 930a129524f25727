"""The benchmark baselines keep working: noop_server answers Authenticate with ALLOW
on the callback API and on the async completion-queue API (--api=cq), as seen by
python3-grpcio, and iotauth_loadgen drives each for a moment without errors, closed
loop and at a fixed rate. Both
exit cleanly on SIGTERM. (Figures come from tools/bench, never from tests.)"""

import json
import signal
import subprocess
import time
import unittest

import grpc

import iotauth_harness as h

METHOD = "iotauth.identity.v1.IdentityService/Authenticate"


class NoopServer:
    def __init__(self, *args):
        self.proc = subprocess.Popen([h.runfile("tools/bench/noop_server"), "--port=0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise AssertionError("noop_server did not start: %r %s" % (line, self.proc.stderr.read()))
        self.port = int(line.split()[1])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "hung on SIGTERM"


class BenchBaselineTest(unittest.TestCase):
    def check_server(self, *args):
        srv = NoopServer(*args)
        try:
            with grpc.insecure_channel("127.0.0.1:%d" % srv.port) as ch:
                for i in range(20):
                    resp = h.call(ch, METHOD, {"connect": {"client_id": "dev-%d" % i}})
                    self.assertEqual(h.to_dict(resp)["decision"], "DECISION_ALLOW")
            out = subprocess.run(
                [h.runfile("tools/bench/iotauth_loadgen"), "--target=127.0.0.1:%d" % srv.port,
                 "--channels=2", "--concurrency=8", "--warmup=0s", "--duration=1s", "--json",
                 "--progress=false"],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            r = json.loads(out.stdout)
            self.assertGreater(r["calls"], 0)
            self.assertEqual(r["errors"], 0)
            self.assertEqual(r["calls"], r["allow"])
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_callback_api(self):
        self.check_server()

    def test_completion_queue_api(self):
        self.check_server("--api=cq", "--cq_threads=2")

    def test_fixed_rate_sends_every_call_due(self):
        # Open loop, both senders: a spinning thread that also polls the completions
        # (--busy_poll, the default) and a ticking sender with a polling thread. Each
        # must send every call due in the window, once, and see all of them answered.
        srv = NoopServer()
        try:
            for busy in ("true", "false"):
                out = subprocess.run(
                    [h.runfile("tools/bench/iotauth_loadgen"), "--target=127.0.0.1:%d" % srv.port,
                     "--channels=2", "--concurrency=64", "--rate=2000", "--warmup=0s",
                     "--duration=1s", "--json", "--progress=false", "--busy_poll=" + busy],
                    capture_output=True, text=True, timeout=60)
                self.assertEqual(out.returncode, 0, out.stderr)
                r = json.loads(out.stdout)
                self.assertEqual(r["load"], "fixed_rate")
                self.assertAlmostEqual(r["calls"], 2000, delta=2)
                self.assertEqual(r["calls"], r["allow"])
                self.assertEqual(r["errors"], 0)
                self.assertEqual(r["busy_poll"], busy == "true")
                if busy == "true":
                    self.assertGreaterEqual(r["client_busy_fraction"], 0.0)
                    self.assertLessEqual(r["client_busy_fraction"], 1.0)
                else:
                    self.assertNotIn("client_busy_fraction", r)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_server_args(self):
        # --server_arg passes integer channel arguments to the baseline's server.
        self.check_server("--server_arg=grpc.minimal_stack=1,grpc.http2.bdp_probe=0")
        p = subprocess.run([h.runfile("tools/bench/noop_server"), "--port=0",
                            "--server_arg=grpc.minimal_stack"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--server_arg wants name=integer", p.stderr)

    def test_bad_api_is_refused(self):
        p = subprocess.run([h.runfile("tools/bench/noop_server"), "--port=0", "--api=sync"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--api is callback or cq", p.stderr)


if __name__ == "__main__":
    unittest.main()
