#include "services/common/server_security.h"

#include <grpcpp/security/auth_context.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server_context.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/common/config.h"
#include "services/common/crypto.h"
#include "services/common/dev_pki.h"
#include "services/common/status_macros.h"
#include "services/common/verified_subject.h"

namespace iotauth {
namespace {

using iotauth::config::v1::TlsMode;

uint32_t RolesOf(const google::protobuf::RepeatedPtrField<std::string>& names) {
  uint32_t roles = 0;
  for (const auto& n : names) {
    Role r;
    if (ParseRole(n, &r)) roles |= static_cast<uint32_t>(r);
  }
  return roles;
}

}  // namespace

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFrom(const TlsReloader& tls) {
  grpc::experimental::TlsChannelCredentialsOptions opts;
  opts.set_certificate_provider(tls.provider());
  if (tls.has_ca()) opts.watch_root_certs();
  if (tls.has_identity()) opts.watch_identity_key_cert_pairs();
  opts.set_verify_server_certs(true);
  // Without a verifier these credentials would check the chain but not the name.
  opts.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  return grpc::experimental::TlsCredentials(opts);
}

std::string TlsStagingRoot(const iotauth::config::v1::ServerConfig& config) {
  const std::string& data_dir = config.data_dir();
  return absl::StrCat(data_dir, absl::EndsWith(data_dir, "/") ? "" : "/", "tls-staging");
}

absl::StatusOr<ServerTls> BuildServerCredentials(const iotauth::config::v1::ServerConfig& config) {
  const auto& tls = config.grpc().tls();
  TlsMode mode = tls.mode();
  if (mode == iotauth::config::v1::TLS_MODE_INSECURE) {
    return ServerTls{grpc::InsecureServerCredentials(), nullptr};
  }
  TlsSourcePaths paths{tls.cert_file(), tls.key_file(), tls.client_ca_file()};
  if (mode == iotauth::config::v1::TLS_MODE_DEV_PKI ||
      mode == iotauth::config::v1::TLS_MODE_UNSPECIFIED) {
    IOTAUTH_RETURN_IF_ERROR(EnsureDevPki(DevPkiDir(config), absl::Now()).status());
    DevPkiPaths p = DevPkiLayout(DevPkiDir(config));
    paths = {p.server_cert, p.server_key, p.ca_cert};
  }
  TlsReloader::Options options;
  options.staging_root = TlsStagingRoot(config);
  options.use = "server";
  IOTAUTH_ASSIGN_OR_RETURN(std::shared_ptr<TlsReloader> reloader,
                           TlsReloader::Start(paths, std::move(options)));
  grpc::experimental::TlsServerCredentialsOptions opts(reloader->provider());
  opts.watch_identity_key_cert_pairs();
  if (reloader->has_ca()) opts.watch_root_certs();
  opts.set_cert_request_type(mode == iotauth::config::v1::TLS_MODE_MTLS
                                 ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                 : (reloader->has_ca()
                                        ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                                        : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE));
  return ServerTls{grpc::experimental::TlsServerCredentials(opts), std::move(reloader)};
}

namespace {
int HexNibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  return absl::ascii_tolower(static_cast<unsigned char>(c)) - 'a' + 10;
}
}  // namespace

std::vector<std::pair<std::string, std::string>> ParseRfc2253(const std::string& subject) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string attr;
  std::string value;
  bool in_value = false;
  for (size_t i = 0; i < subject.size(); ++i) {
    char c = subject[i];
    if (c == '\\' && i + 2 < subject.size() && absl::ascii_isxdigit(subject[i + 1]) &&
        absl::ascii_isxdigit(subject[i + 2])) {
      // RFC 4514 hexpair: one byte (non-ASCII UTF-8 arrives as one per byte, `Zo\C3\AB`).
      (in_value ? value : attr) +=
          static_cast<char>(HexNibble(subject[i + 1]) * 16 + HexNibble(subject[i + 2]));
      i += 2;
    } else if (c == '\\' && i + 1 < subject.size()) {
      (in_value ? value : attr) += subject[++i];
    } else if (c == '=' && !in_value) {
      in_value = true;
    } else if ((c == ',' || c == '+') && in_value) {
      out.emplace_back(attr, value);
      attr.clear();
      value.clear();
      in_value = false;
    } else {
      (in_value ? value : attr) += c;
    }
  }
  if (in_value) out.emplace_back(attr, value);
  return out;
}

ConfiguredCallerResolver::ConfiguredCallerResolver(const iotauth::config::v1::AuthConfig& auth)
    : roles_from_ou_(auth.roles_from_ou()) {
  for (const auto& b : auth.cert_roles()) {
    cn_roles_.emplace_back(b.subject_cn(), RolesOf(b.roles()));
  }
  for (const auto& t : auth.bearer_tokens()) {
    auto raw = crypto::HexDecode(t.sha256());
    if (raw.ok()) tokens_.push_back({t.name(), *raw, RolesOf(t.roles()), /*internal=*/false});
  }
}

void ConfiguredCallerResolver::AddInternalToken(const std::string& name, const std::string& token,
                                                uint32_t roles) {
  tokens_.push_back({name, crypto::Sha256(token), roles, /*internal=*/true});
}

Caller ConfiguredCallerResolver::ResolveFrom(const std::string& bearer_token,
                                             const std::string& cert_subject) const {
  Caller c;
  if (!bearer_token.empty()) {
    std::string digest = crypto::Sha256(bearer_token);
    // Compare against every token so timing does not reveal which one matched.
    const Token* match = nullptr;
    for (const Token& t : tokens_) {
      if (crypto::ConstantTimeEquals(digest, t.sha256) && match == nullptr) match = &t;
    }
    if (match != nullptr) {
      c.authenticated = true;
      c.principal = match->name;
      c.roles = match->roles;
      c.internal = match->internal;
    }
    // A wrong token is never silently downgraded to the certificate identity.
    return c;
  }
  if (cert_subject.empty()) return c;
  std::string cn;
  uint32_t ou_roles = 0;
  for (const auto& [attr, value] : ParseRfc2253(cert_subject)) {
    if (attr == "CN") cn = value;
    if (attr == "OU" && roles_from_ou_) {
      Role r;
      if (ParseRole(value, &r)) ou_roles |= static_cast<uint32_t>(r);
    }
  }
  c.authenticated = true;
  c.principal = cn.empty() ? cert_subject : cn;
  c.roles = ou_roles;
  for (const auto& [bound_cn, roles] : cn_roles_) {
    if (bound_cn == cn) c.roles |= roles;
  }
  return c;
}

bool ConfiguredCallerResolver::IsBearer(absl::string_view authorization) {
  return absl::StartsWithIgnoreCase(authorization, "bearer ");
}

std::string ConfiguredCallerResolver::BearerTokenOf(absl::string_view authorization) {
  if (IsBearer(authorization)) return std::string(authorization.substr(7));
  return "\x01invalid-scheme";  // present but unusable: fails like a wrong token
}

Caller ConfiguredCallerResolver::Resolve(const grpc::ServerContextBase& context) const {
  std::string token;
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it != md.end()) {
    token = BearerTokenOf(absl::string_view(it->second.data(), it->second.size()));
  }
  std::string subject;
  if (token.empty()) subject = std::string(VerifiedSubject(context.auth_context().get()));
  Caller c = ResolveFrom(token, subject);
  c.peer = context.peer();
  return c;
}

}  // namespace iotauth
