"""End-to-end harness: starts the real iotauth binaries on ephemeral ports and
talks to them with clients the project did not write (Debian's python3-grpcio,
`buf curl` from npm, promtool from Debian's prometheus package).

Messages are built dynamically from the descriptor set Bazel generates
(//proto:iotauth_descriptors), so the tests share no generated code with the server.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory


def runfile(path):
    """Absolute path of a Bazel runfile (workspace-relative path)."""
    base = os.environ.get("TEST_SRCDIR")
    if base:
        p = os.path.join(base, "iotauth", path)
        if os.path.exists(p):
            return p
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    for cand in (os.path.join(root, "bazel-bin", path), os.path.join(root, path)):
        if os.path.exists(cand):
            return cand
    return os.path.join(root, path)


def find_buf():
    for cand in (os.environ.get("IOTAUTH_BUF"),
                 os.path.join(os.environ.get("IOTAUTH_ROOT", ""), ".tools/npm/node_modules/.bin/buf"),
                 shutil.which("buf")):
        if cand and os.path.exists(cand):
            return cand
    raise RuntimeError("buf not found: run tools/setup.sh (it installs @bufbuild/buf into .tools/npm)")


class Schema:
    """Message classes from the project's descriptor set."""

    def __init__(self):
        fds = descriptor_pb2.FileDescriptorSet()
        with open(runfile("proto/iotauth_descriptors.pb"), "rb") as f:
            fds.ParseFromString(f.read())
        self.pool = descriptor_pool.DescriptorPool()
        for fd in fds.file:
            self.pool.Add(fd)
        self.factory = message_factory.MessageFactory(self.pool)

    def cls(self, full_name):
        return self.factory.GetPrototype(self.pool.FindMessageTypeByName(full_name))

    def method(self, full_method):
        svc, name = full_method.rsplit("/", 1)
        m = self.pool.FindServiceByName(svc).FindMethodByName(name)
        return (self.factory.GetPrototype(m.input_type), self.factory.GetPrototype(m.output_type),
                m.client_streaming, m.server_streaming)


SCHEMA = None


def schema():
    global SCHEMA
    if SCHEMA is None:
        SCHEMA = Schema()
    return SCHEMA


class Server:
    """One iotauth server process on ephemeral ports with a private data dir."""

    def __init__(self, binary="services/server/iotauthd", args=(), env=None, data_dir=None,
                 log_through_pipe=False):
        """log_through_pipe: the server writes its log to a pipe this process copies
        into the log file, so that a file size limit put on the server (prlimit)
        does not cut its log short."""
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="iotauth-e2e-")
        self.log_through_pipe = log_through_pipe
        self.log_copier = None
        self.binary = runfile(binary)
        self.args = ["--data_dir=" + self.data_dir, "--set=grpc.address=127.0.0.1:0",
                     "--set=metrics.address=127.0.0.1:0"] + list(args)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.grpc_port = None
        self.metrics_port = None
        self.log_path = os.path.join(self.data_dir, "server.log")

    def start(self, timeout=30):
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([self.binary] + self.args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE if self.log_through_pipe else self.log_file,
                                     env=self.env)
        if self.log_through_pipe:
            def copy(src, dst):
                for line in iter(src.readline, b""):
                    dst.write(line)
                    dst.flush()
            self.log_copier = threading.Thread(target=copy, args=(self.proc.stderr, self.log_file),
                                               daemon=True)
            self.log_copier.start()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %d:\n%s" % (self.proc.returncode, self.log()))
            for line in self.log().splitlines():
                if '"msg":"serving"' in line:
                    rec = json.loads(line)
                    self.grpc_port = int(rec["grpc_port"])
                    self.metrics_port = int(rec["metrics_port"])
                    return self
            time.sleep(0.05)
        raise RuntimeError("server did not start in %ds:\n%s" % (timeout, self.log()))

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @property
    def address(self):
        return "localhost:%d" % self.grpc_port

    def pki(self, name):
        return os.path.join(self.data_dir, "pki", name)

    def channel(self, role="admin", token=None):
        """A TLS channel trusting the dev CA; `role` picks the client certificate
        (None: no client certificate)."""
        with open(self.pki("ca.pem"), "rb") as f:
            ca = f.read()
        key = cert = None
        if role:
            with open(self.pki(role + ".key"), "rb") as f:
                key = f.read()
            with open(self.pki(role + ".pem"), "rb") as f:
                cert = f.read()
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                             certificate_chain=cert)
        if token:
            creds = grpc.composite_channel_credentials(
                creds, grpc.access_token_call_credentials(token))
        return grpc.secure_channel(self.address, creds)

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10) as r:
            return r.read().decode()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self._close_log()

    def _close_log(self):
        if self.log_copier is not None:
            self.log_copier.join(10)
            self.log_copier = None
            self.proc.stderr.close()
        if getattr(self, "log_file", None):
            self.log_file.close()


def call(channel, full_method, request=None, timeout=10, metadata=None, **fields):
    """Unary call with a dict/kwargs request; returns the response message."""
    req_cls, resp_cls, cs, ss = schema().method(full_method)
    assert not cs and not ss, full_method
    req = req_cls()
    if request is not None:
        json_format.ParseDict(request, req)
    elif fields:
        json_format.ParseDict(fields, req)
    stub = channel.unary_unary("/" + full_method, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=resp_cls.FromString)
    return stub(req, timeout=timeout, metadata=metadata)


def error_reason(rpc_error):
    """The stable reason of a failed call: the google.rpc.ErrorInfo (domain
    iotauth.dev) in its grpc-status-details-bin trailer, as any gRPC client reads it;
    None without one."""
    details = dict(rpc_error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if details is None:
        return None
    status = schema().cls("google.rpc.Status").FromString(details)
    assert status.code == rpc_error.code().value[0], (status.code, rpc_error.code())
    assert status.message == rpc_error.details(), (status.message, rpc_error.details())
    for any_msg in status.details:
        if any_msg.type_url == "type.googleapis.com/google.rpc.ErrorInfo":
            info = schema().cls("google.rpc.ErrorInfo").FromString(any_msg.value)
            if info.domain == "iotauth.dev":
                return info.reason
    return None


def server_stream(channel, full_method, request, timeout=None):
    req_cls, resp_cls, _, _ = schema().method(full_method)
    req = req_cls()
    json_format.ParseDict(request, req)
    stub = channel.unary_stream("/" + full_method, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=resp_cls.FromString)
    return stub(req, timeout=timeout)


def client_stream(channel, full_method, requests, timeout=60):
    req_cls, resp_cls, _, _ = schema().method(full_method)

    def gen():
        for r in requests:
            m = req_cls()
            json_format.ParseDict(r, m)
            yield m

    stub = channel.stream_unary("/" + full_method, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=resp_cls.FromString)
    return stub.future(gen(), timeout=timeout)


def to_dict(msg):
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def buf_curl(server, path_or_flags, data=None, role="admin", extra=()):
    cmd = [find_buf(), "curl", "--protocol", "grpc", "--cacert", server.pki("ca.pem")]
    if role:
        cmd += ["--cert", server.pki(role + ".pem"), "--key", server.pki(role + ".key")]
    cmd += list(extra)
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    if isinstance(path_or_flags, list):
        cmd += path_or_flags
    else:
        cmd += ["https://%s/%s" % (server.address, path_or_flags)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def promtool_check(text):
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)


def metric_value(text, name, **labels):
    """Sum of samples of `name` whose labels include `labels`."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
            found = True
    return total if found else None
