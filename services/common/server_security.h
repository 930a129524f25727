// Listener security and caller authentication: turns the TLS section of the
// config into gRPC server credentials, and resolves each caller's roles from its
// verified client certificate (OU or configured CN bindings) or a bearer token.
#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/iotauth/config/v1/config.pb.h"
#include "services/common/caller.h"
#include "services/common/tls_reloader.h"

namespace iotauth {

// The listener's credentials, and with TLS what keeps its files current.
struct ServerTls {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Null in plaintext. Keep it until the server is gone: gRPC reads the files it
  // stages. Export its metrics through the server's registry.
  std::shared_ptr<TlsReloader> reloader;
};

// Builds credentials for `config.grpc.tls` (creating the dev PKI when asked to). The
// certificate, key and CA files are read again every second: a replaced set that
// passes its checks is what new connections get, without a restart.
absl::StatusOr<ServerTls> BuildServerCredentials(const iotauth::config::v1::ServerConfig& config);

// Client credentials over `tls`'s files (its CA bundle, else the system's roots;
// its certificate, if any): the server's chain and name are checked as
// grpc::SslCredentials does, and a replaced set is used by new connections.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFrom(const TlsReloader& tls);

// Where TLS files are staged for gRPC: `<data_dir>/tls-staging`.
std::string TlsStagingRoot(const iotauth::config::v1::ServerConfig& config);

// Parses an RFC 2253 subject ("CN=a,OU=admin,O=x") into (attribute, value) pairs.
std::vector<std::pair<std::string, std::string>> ParseRfc2253(const std::string& subject);

// Resolves callers from the auth config. Thread-safe, lock-free.
class ConfiguredCallerResolver final : public CallerResolver {
 public:
  // When auth is disabled, prefer AllowAllCallerResolver.
  explicit ConfiguredCallerResolver(const iotauth::config::v1::AuthConfig& auth);

  Caller Resolve(const grpc::ServerContextBase& context) const override;

  // The pure part, for tests: a bearer token (may be empty) and the verified
  // peer certificate subject (may be empty).
  Caller ResolveFrom(const std::string& bearer_token, const std::string& cert_subject) const;

  // The token an `authorization` header value carries ("Bearer <token>"); a value
  // in another scheme gives a token no caller has (it fails like a wrong one).
  static std::string BearerTokenOf(absl::string_view authorization);
  // Whether an `authorization` header value is in the Bearer scheme.
  static bool IsBearer(absl::string_view authorization);

  // Adds an in-process token (the all-in-one binary's internal calls between its
  // services). Call before serving starts.
  void AddInternalToken(const std::string& name, const std::string& token, uint32_t roles);

 private:
  struct Token {
    std::string name;
    std::string sha256;  // raw 32 bytes
    uint32_t roles;
    bool internal = false;
  };
  bool roles_from_ou_;
  std::vector<std::pair<std::string, uint32_t>> cn_roles_;
  std::vector<Token> tokens_;
};

}  // namespace iotauth
