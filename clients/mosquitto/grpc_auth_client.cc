#include "clients/mosquitto/grpc_auth_client.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"
#include "services/common/tls_files.h"

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

bool Readable(const std::string& path) { return path.empty() || access(path.c_str(), R_OK) == 0; }

// What CheckTlsFiles says of these contents (the CA bundle is always configured
// with TLS; a certificate and key only for mutual TLS). Never quotes the key.
absl::Status CheckContents(const std::string& ca, const std::string& cert, const std::string& key,
                           bool with_identity) {
  TlsFiles f;
  f.with_identity = with_identity;
  f.cert_chain = cert;
  f.private_key = key;
  f.with_ca = true;
  f.ca_bundle = ca;
  return CheckTlsFiles(f).status();
}

constexpr absl::Duration kFileCheckInterval = absl::Seconds(10);
}  // namespace

absl::StatusOr<std::unique_ptr<GrpcAuthClient>> GrpcAuthClient::Create(const PluginConfig& c) {
  std::unique_ptr<GrpcAuthClient> client(new GrpcAuthClient());
  client->address_ = c.address;
  client->server_name_ = c.tls_server_name;
  if (!c.ca_file.empty()) {
    client->tls_ = true;
    for (auto [path, pem] :
         {std::pair{&c.ca_file, &client->ca_pem_}, std::pair{&c.cert_file, &client->cert_pem_},
          std::pair{&c.key_file, &client->key_pem_}}) {
      if (path->empty()) continue;
      absl::StatusOr<std::string> content = ReadFile(*path);
      if (!content.ok()) return content.status();
      *pem = *std::move(content);
    }
    client->ca_file_ = c.ca_file;
    client->cert_file_ = c.cert_file;
    client->key_file_ = c.key_file;
    absl::Status checked =
        CheckContents(client->ca_pem_, client->cert_pem_, client->key_pem_, !c.cert_file.empty());
    if (!checked.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "plugin_opt_ca_file / plugin_opt_cert_file / plugin_opt_key_file: ", checked.message()));
    }
  }
  return client;
}

iv1::IdentityService::Stub* GrpcAuthClient::Stub() {
  absl::MutexLock lock(&mu_);
  if (stub_ == nullptr) {
    std::shared_ptr<grpc::ChannelCredentials> creds;
    if (tls_ && !(Readable(ca_file_) && Readable(cert_file_) && Readable(key_file_))) {
      // Not readable by the user the broker runs as now: what was read at load.
      grpc::SslCredentialsOptions o;
      o.pem_root_certs = ca_pem_;
      o.pem_cert_chain = cert_pem_;
      o.pem_private_key = key_pem_;
      creds = grpc::SslCredentials(o);
    } else if (tls_) {
      watching_files_ = true;
      // Read again every second, so that a connection made after a renewal presents
      // the new certificate. The files must be replaced together (a rename, or
      // Kubernetes' Secret volume): a key read with the other pair's certificate
      // fails that connection attempt, and the next one, a second later, succeeds.
      grpc::experimental::TlsChannelCredentialsOptions o;
      o.set_certificate_provider(
          std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
              key_file_, cert_file_, ca_file_, /*refresh_interval_sec=*/1));
      o.watch_root_certs();
      if (!cert_file_.empty()) o.watch_identity_key_cert_pairs();
      o.set_verify_server_certs(true);
      // As grpc::SslCredentials did: the server's name is checked too.
      o.set_certificate_verifier(
          std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
      creds = grpc::experimental::TlsCredentials(o);
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
    absl::Status failed = FromGrpcStatus(s);
    // Not reached: if a renewal broke the TLS files, say so.
    if (failed.code() == absl::StatusCode::kUnavailable && ErrorReason(failed).empty()) {
      if (std::string problem = WatchedFilesProblem(); !problem.empty()) {
        return absl::UnavailableError(
            absl::StrCat(failed.message(), "; the TLS files fail their check now: ", problem,
                         " (write the certificate and key together, as one matching pair)"));
      }
    }
    return failed;
  }
  return resp;
}

std::string GrpcAuthClient::WatchedFilesProblem() {
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (!watching_files_ || now - files_checked_ < kFileCheckInterval) return "";
    files_checked_ = now;
  }
  std::string pem[3];
  const std::string* paths[3] = {&ca_file_, &cert_file_, &key_file_};
  for (int i = 0; i < 3; ++i) {
    if (paths[i]->empty()) continue;
    absl::StatusOr<std::string> content = ReadFile(*paths[i]);
    if (!content.ok()) return std::string(content.status().message());
    pem[i] = *std::move(content);
  }
  absl::Status checked = CheckContents(pem[0], pem[1], pem[2], !cert_file_.empty());
  return checked.ok() ? "" : std::string(checked.message());
}

}  // namespace iotauth::mosquitto
