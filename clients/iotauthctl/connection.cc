#include "clients/iotauthctl/connection.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"

namespace iotauth::cli {

FileReader RealFileReader() {
  return [](const std::string& path) -> absl::StatusOr<std::string> {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
}

FileExists RealFileExists() {
  return [](const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  };
}

void AddConnectionFlags(Command& root) {
  root.Flag({"address", "HOST:PORT", "Server address", kDefaultAddress, "IOTAUTH_ADDRESS"})
      .Flag({"data_dir", "DIR",
             "Server data directory; its pki/ holds the development CA and admin certificate",
             kDefaultDataDir, "IOTAUTH_DATA_DIR"})
      .Flag({"ca", "FILE",
             "PEM trust anchor for the server certificate (instead of <data_dir>/pki/ca.pem)"})
      .Flag({"cert", "FILE", "PEM client certificate (instead of <data_dir>/pki/admin.pem)"})
      .Flag({"key", "FILE", "PEM client private key (instead of <data_dir>/pki/admin.key)"})
      .Flag({"token", "TOKEN", "Bearer token sent as 'authorization: Bearer <token>'", "",
             "IOTAUTH_TOKEN"})
      .Flag({"server_name", "NAME", "Expected name in the server certificate (TLS override)"})
      .Flag({"insecure", "", "Plaintext connection (no TLS)"})
      .Flag({"timeout", "DURATION", "Deadline of each call", "10s"});
}

absl::StatusOr<ConnectionFlags> ConnectionFlagsFrom(const Flags& flags) {
  ConnectionFlags c;
  c.address = flags.Get("address");
  c.data_dir = flags.Get("data_dir");
  c.ca = flags.Get("ca");
  c.cert = flags.Get("cert");
  c.key = flags.Get("key");
  c.token = flags.Get("token");
  c.server_name = flags.Get("server_name");
  auto insecure = flags.GetBool("insecure");
  if (!insecure.ok()) return insecure.status();
  c.insecure = *insecure;
  auto timeout = flags.GetDuration("timeout");
  if (!timeout.ok()) return timeout.status();
  if (*timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("flag --timeout must be positive");
  }
  c.timeout = *timeout;
  c.timeout_explicit = flags.GivenOnCommandLine("timeout");
  if (c.address.empty()) return absl::InvalidArgumentError("flag --address is empty");
  return c;
}

absl::StatusOr<ConnectionSettings> ResolveConnection(const ConnectionFlags& f,
                                                     const FileReader& read,
                                                     const FileExists& exists) {
  ConnectionSettings s;
  s.address = f.address;
  s.token = f.token;
  s.server_name = f.server_name;
  s.timeout = f.timeout;
  s.timeout_explicit = f.timeout_explicit;
  if (f.insecure) {
    if (!f.ca.empty() || !f.cert.empty() || !f.key.empty() || !f.server_name.empty()) {
      return absl::InvalidArgumentError(
          "--insecure (plaintext) cannot be combined with --ca, --cert, --key or --server_name");
    }
    s.insecure = true;
    return s;
  }
  if (f.cert.empty() != f.key.empty()) {
    return absl::InvalidArgumentError("--cert and --key must be given together");
  }
  const std::string pki = absl::StrCat(f.data_dir, "/pki");
  const bool explicit_tls = !f.ca.empty() || !f.cert.empty() || !f.token.empty();
  auto missing_pki = [&](const std::string& path) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no TLS material: ", path, " does not exist.\n",
        "The server creates a development PKI under its data directory on first start. Either:\n"
        "  - start the server first (tools/run.sh) and run iotauthctl\n"
        "    from the same directory, or point --data_dir (env IOTAUTH_DATA_DIR) at its data "
        "directory;\n"
        "  - pass --ca FILE with --cert FILE --key FILE, or --token TOKEN, for a server with its "
        "own PKI;\n"
        "  - pass --insecure for a plaintext server."));
  };
  std::string ca_path = f.ca;
  if (ca_path.empty()) {
    ca_path = pki + "/ca.pem";
    if (!exists(ca_path)) return missing_pki(ca_path);
    s.pki_source = pki;
  }
  auto ca = read(ca_path);
  if (!ca.ok()) return ca.status();
  s.ca_pem = *std::move(ca);
  std::string cert_path = f.cert;
  std::string key_path = f.key;
  if (cert_path.empty() && f.token.empty()) {
    cert_path = pki + "/admin.pem";
    key_path = pki + "/admin.key";
    if (!exists(cert_path)) {
      if (explicit_tls) {
        return absl::FailedPreconditionError(
            absl::StrCat("no client certificate: pass --cert and --key, or --token (", cert_path,
                         " does not exist)"));
      }
      return missing_pki(cert_path);
    }
    s.pki_source = pki;
  }
  if (!cert_path.empty()) {
    auto cert = read(cert_path);
    if (!cert.ok()) return cert.status();
    auto key = read(key_path);
    if (!key.ok()) return key.status();
    s.cert_pem = *std::move(cert);
    s.key_pem = *std::move(key);
  }
  return s;
}

Connection::Connection(std::shared_ptr<grpc::Channel> channel, ConnectionSettings settings)
    : channel_(std::move(channel)), settings_(std::move(settings)) {}

std::unique_ptr<Connection> Connection::Open(ConnectionSettings settings) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (settings.insecure) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions opts;
    opts.pem_root_certs = settings.ca_pem;
    opts.pem_cert_chain = settings.cert_pem;
    opts.pem_private_key = settings.key_pem;
    creds = grpc::SslCredentials(opts);
    if (!settings.server_name.empty()) args.SetSslTargetNameOverride(settings.server_name);
  }
  auto channel = grpc::CreateCustomChannel(settings.address, creds, args);
  return std::make_unique<Connection>(std::move(channel), std::move(settings));
}

void Connection::PrepareUnary(grpc::ClientContext* context) const {
  PrepareStream(context);
  context->set_deadline(absl::ToChronoTime(absl::Now() + settings_.timeout));
}

void Connection::PrepareStream(grpc::ClientContext* context) const {
  if (!settings_.token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", settings_.token));
  }
  if (settings_.timeout_explicit) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + settings_.timeout));
  }
}

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return absl::StrCat("CODE_", static_cast<int>(code));
  }
}

std::string RpcErrorHint(grpc::StatusCode code, const ConnectionSettings& s) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::StrCat(
          "is the server running at ", s.address,
          "? Start it (tools/run.sh) "
          "or pass --address. ",
          s.insecure ? "If the server uses TLS, drop --insecure."
                     : "If the server is plaintext, pass --insecure; if the TLS handshake "
                       "failed, check --ca/--server_name (the development certificate covers "
                       "localhost and 127.0.0.1).");
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "the server did not answer in time: raise --timeout or check the server's load.";
    case grpc::StatusCode::UNAUTHENTICATED:
      return s.insecure ? "the server requires caller credentials: pass --token, or use TLS with "
                          "--cert/--key (drop --insecure)."
                        : "present a client certificate (--cert/--key; the development admin "
                          "certificate is <data_dir>/pki/admin.pem) or a valid --token.";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "your identity lacks the role this call needs (mutations need admin, reads need "
             "reader): use the admin certificate or an admin --token.";
    case grpc::StatusCode::NOT_FOUND:
      return "check the id and --tenant; the list commands show what exists.";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "the resource exists already: use 'get' to see it or 'update' to change it.";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "the resource changed or is not in the needed state (etag mismatch?): 'get' it "
             "again and retry with the current --etag.";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "the server rejected a field (named above): fix the value and retry.";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "the server does not implement this call (older server, or that service is not "
             "enabled in this process).";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "a limit was hit (a rate limit, a message size, or the server's disk; the message "
             "says which): retry later, send smaller batches, or free space on the server.";
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::DATA_LOSS:
      return "a server-side failure: check the server log (the request id, if any, is in it).";
    default:
      return "retry; if it persists check the server log.";
  }
}

int ReportRpcError(const Invocation& inv, const grpc::Status& status, absl::string_view rpc,
                   const ConnectionSettings& settings) {
  inv.err() << "error: " << rpc << ": " << StatusCodeName(status.error_code());
  if (!status.error_message().empty()) inv.err() << ": " << status.error_message();
  // The stable reason (google.rpc.ErrorInfo in the details), for scripts to match.
  const absl::Status detailed = FromGrpcStatus(status);
  const std::string reason = ErrorReason(detailed);
  if (!reason.empty()) inv.err() << "\nreason: " << reason;
  const std::string role = reason == "ROLE_REQUIRED" ? ErrorMetadata(detailed, "role") : "";
  if (!role.empty()) {
    inv.err() << "\nhint: this call needs the " << role
              << " role: use a certificate or --token that has it (the development "
                 "admin certificate is <data_dir>/pki/admin.pem).\n";
  } else if (reason == "AUDIT_UNWRITABLE") {
    // UNAVAILABLE, but the server is up: its audit log cannot record the call.
    inv.err() << "\nhint: the server is running but refuses calls its audit log cannot "
                 "record (audit.when_unwritable=refuse): retry once iotauth_audit_writable "
                 "is 1 again; operators free space or fix the audit store.\n";
  } else if (reason == "DIRECTORY_LOADING") {
    // UNAVAILABLE too, and the server is up: it is still reading the registry.
    inv.err() << "\nhint: the server is running and still loading its device directory from "
                 "the registry (a large one takes seconds after start-up): retry shortly; "
                 "`iotauthctl health` reports SERVING once it is done.\n";
  } else if (reason == "NO_CHECKPOINT") {
    inv.err() << "\nhint: record one first with `iotauthctl audit checkpoint --create`.\n";
  } else if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
             reason != "ETAG_MISMATCH" && !absl::StrContains(status.error_message(), "etag")) {
    // Not a concurrent change: the server's message says which state is missing.
    inv.err() << "\nhint: the resource is not in the state this call needs; do what the "
                 "message above says first.\n";
  } else {
    inv.err() << "\nhint: " << RpcErrorHint(status.error_code(), settings) << "\n";
  }
  return kExitRpcError;
}

App& AppOf(const Invocation& inv) { return *static_cast<App*>(inv.app); }

std::unique_ptr<Connection> ConnectOrReport(const Invocation& inv, int* exit_code) {
  auto flags = ConnectionFlagsFrom(inv.flags);
  if (!flags.ok()) {
    *exit_code = inv.UsageError(flags.status().message());
    return nullptr;
  }
  App& app = AppOf(inv);
  if (app.channel_override) {
    ConnectionSettings s;
    s.address = flags->address;
    s.insecure = true;
    s.token = flags->token;
    s.timeout = flags->timeout;
    s.timeout_explicit = flags->timeout_explicit;
    return std::make_unique<Connection>(app.channel_override(), std::move(s));
  }
  auto settings = ResolveConnection(*flags, app.read_file, app.file_exists);
  if (!settings.ok()) {
    if (settings.status().code() == absl::StatusCode::kInvalidArgument) {
      *exit_code = inv.UsageError(settings.status().message());
    } else {
      *exit_code = inv.LocalError(settings.status().message());
    }
    return nullptr;
  }
  return Connection::Open(*std::move(settings));
}

}  // namespace iotauth::cli
