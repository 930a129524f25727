// How iotauthctl reaches the server: resolves --address, TLS material (by default
// the embedded server's development PKI under the data directory), bearer token
// and timeouts into ConnectionSettings, opens the channel, prepares per-call
// contexts, and turns a failed RPC into a message with a hint and exit code 3.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "clients/iotauthctl/command.h"
#include "grpcpp/grpcpp.h"

namespace iotauth::cli {

inline constexpr char kDefaultAddress[] = "localhost:50051";
inline constexpr char kDefaultDataDir[] = "./iotauth-data";

// Raw connection inputs, as given on the command line or in the environment.
struct ConnectionFlags {
  std::string address = kDefaultAddress;
  std::string data_dir = kDefaultDataDir;
  std::string ca, cert, key;  // file paths
  std::string token;          // SECRET
  std::string server_name;    // TLS name override
  bool insecure = false;
  absl::Duration timeout = absl::Seconds(10);
  bool timeout_explicit = false;
};

// Everything needed to open the channel.
struct ConnectionSettings {
  std::string address;
  bool insecure = false;
  std::string ca_pem, cert_pem, key_pem;  // key_pem is SECRET
  std::string token;                      // SECRET
  std::string server_name;
  absl::Duration timeout = absl::Seconds(10);
  bool timeout_explicit = false;
  // Where the TLS material came from, for hints (`./iotauth-data/pki`).
  std::string pki_source;
};

using FileReader = std::function<absl::StatusOr<std::string>(const std::string&)>;
using FileExists = std::function<bool(const std::string&)>;
FileReader RealFileReader();
FileExists RealFileExists();

// Adds --address, --data_dir, --ca, --cert, --key, --token, --server_name,
// --insecure and --timeout to a (root) command.
void AddConnectionFlags(Command& root);
// Reads the flags added by AddConnectionFlags. INVALID_ARGUMENT on a bad value.
absl::StatusOr<ConnectionFlags> ConnectionFlagsFrom(const Flags& flags);

// Applies the rules (pure, unit-tested):
// - --insecure: plaintext; --ca/--cert/--key are then a usage error.
// - otherwise TLS, trusting --ca or <data_dir>/pki/ca.pem; client certificate
//   --cert/--key (both or neither), else <data_dir>/pki/admin.pem + admin.key unless
//   --token is given (server-authenticated TLS plus a bearer token).
// INVALID_ARGUMENT for contradictory flags; FAILED_PRECONDITION, with what to do,
// when the development PKI is missing; NOT_FOUND for an unreadable file.
absl::StatusOr<ConnectionSettings> ResolveConnection(const ConnectionFlags& flags,
                                                     const FileReader& read,
                                                     const FileExists& exists);

class Connection {
 public:
  Connection(std::shared_ptr<grpc::Channel> channel, ConnectionSettings settings);
  // Opens a channel (lazily connecting) for `settings`.
  static std::unique_ptr<Connection> Open(ConnectionSettings settings);

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ConnectionSettings& settings() const { return settings_; }
  // Metadata and the --timeout deadline.
  void PrepareUnary(grpc::ClientContext* context) const;
  // Metadata; a deadline only when --timeout was given explicitly (imports, exports
  // and watches may legitimately run for a long time).
  void PrepareStream(grpc::ClientContext* context) const;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  ConnectionSettings settings_;
};

// What to try next for a failed RPC (pure, unit-tested).
std::string RpcErrorHint(grpc::StatusCode code, const ConnectionSettings& settings);
// `UNAVAILABLE`, `NOT_FOUND`, ...
std::string StatusCodeName(grpc::StatusCode code);

// Prints `error: <rpc>: <CODE>: <message>` and a hint to stderr; returns
// kExitRpcError.
int ReportRpcError(const Invocation& inv, const grpc::Status& status, absl::string_view rpc,
                   const ConnectionSettings& settings);

// Process-wide collaborators of the CLI; tests replace them.
struct App {
  FileReader read_file = RealFileReader();
  FileExists file_exists = RealFileExists();
  // When set, used instead of dialing --address (in-process test servers).
  std::function<std::shared_ptr<grpc::Channel>()> channel_override;
  // Injected time for token commands and relative time flags.
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

App& AppOf(const Invocation& inv);

// Resolves the connection flags and opens the channel. On failure prints the
// error and sets `*exit_code` (2 for bad flags, 1 for missing files) and returns null.
std::unique_ptr<Connection> ConnectOrReport(const Invocation& inv, int* exit_code);

// A connection and one service's stub over it.
template <typename Service>
struct ServiceClient {
  std::unique_ptr<Connection> conn;
  std::unique_ptr<typename Service::Stub> stub;
};

// ConnectOrReport, then the stub; nullopt (with `*exit_code` set) when it fails.
template <typename Service>
std::optional<ServiceClient<Service>> OpenClient(const Invocation& inv, int* exit_code) {
  auto conn = ConnectOrReport(inv, exit_code);
  if (!conn) return std::nullopt;
  ServiceClient<Service> c;
  c.stub = Service::NewStub(conn->channel());
  c.conn = std::move(conn);
  return c;
}

}  // namespace iotauth::cli
