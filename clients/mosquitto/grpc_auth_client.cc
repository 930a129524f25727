#include "clients/mosquitto/grpc_auth_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace iotauth::mosquitto {

namespace iv1 = ::iotauth::identity::v1;

namespace {
absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

absl::StatusOr<std::unique_ptr<GrpcAuthClient>> GrpcAuthClient::Create(const PluginConfig& c) {
  std::unique_ptr<GrpcAuthClient> client(new GrpcAuthClient());
  client->address_ = c.address;
  client->server_name_ = c.tls_server_name;
  if (!c.ca_file.empty()) {
    client->tls_ = true;
    absl::StatusOr<std::string> ca = ReadFile(c.ca_file);
    if (!ca.ok()) return ca.status();
    client->ca_pem_ = *std::move(ca);
    if (!c.cert_file.empty()) {
      absl::StatusOr<std::string> cert = ReadFile(c.cert_file);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadFile(c.key_file);
      if (!key.ok()) return key.status();
      client->cert_pem_ = *std::move(cert);
      client->key_pem_ = *std::move(key);
    }
  }
  return client;
}

iv1::IdentityService::Stub* GrpcAuthClient::Stub() {
  absl::MutexLock lock(&mu_);
  if (stub_ == nullptr) {
    std::shared_ptr<grpc::ChannelCredentials> creds;
    if (tls_) {
      grpc::SslCredentialsOptions o;
      o.pem_root_certs = ca_pem_;
      o.pem_cert_chain = cert_pem_;
      o.pem_private_key = key_pem_;
      creds = grpc::SslCredentials(o);
    } else {
      creds = grpc::InsecureChannelCredentials();
    }
    grpc::ChannelArguments args;
    if (!server_name_.empty()) args.SetSslTargetNameOverride(server_name_);
    // Fail calls fast while iotauth is unreachable instead of queueing them.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    stub_ = iv1::IdentityService::NewStub(grpc::CreateCustomChannel(address_, creds, args));
  }
  return stub_.get();
}

absl::StatusOr<iv1::AuthenticateResponse> GrpcAuthClient::Authenticate(
    const iv1::AuthenticateRequest& request, absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::microseconds(absl::ToInt64Microseconds(timeout)));
  iv1::AuthenticateResponse resp;
  grpc::Status s = Stub()->Authenticate(&ctx, request, &resp);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return resp;
}

}  // namespace iotauth::mosquitto
