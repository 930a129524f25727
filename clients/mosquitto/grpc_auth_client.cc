#include "clients/mosquitto/grpc_auth_client.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <unistd.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"
#include "services/common/log.h"
#include "services/common/tls_files.h"

namespace iotauth::mosquitto {

namespace iv1 = ::iotauth::identity::v1;

namespace {
bool Readable(const std::string& path) { return path.empty() || access(path.c_str(), R_OK) == 0; }

constexpr absl::Duration kFileCheckInterval = absl::Seconds(10);
}  // namespace

absl::StatusOr<std::unique_ptr<GrpcAuthClient>> GrpcAuthClient::Create(
    const PluginConfig& c, absl::Duration tls_poll_interval) {
  std::unique_ptr<GrpcAuthClient> client(new GrpcAuthClient());
  client->address_ = c.address;
  client->server_name_ = c.tls_server_name;
  client->staging_dir_ = c.tls_staging_dir;
  client->tls_poll_interval_ = tls_poll_interval;
  if (!c.ca_file.empty()) {
    client->tls_ = true;
    client->paths_ = TlsSourcePaths{c.cert_file, c.key_file, c.ca_file};
    absl::StatusOr<TlsFiles> files = ReadTlsFiles(client->paths_);
    if (!files.ok()) return files.status();
    absl::Status checked = CheckTlsFiles(*files).status();
    if (!checked.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "plugin_opt_ca_file / plugin_opt_cert_file / plugin_opt_key_file: ", checked.message()));
    }
    client->loaded_ = *std::move(files);
  }
  return client;
}

GrpcAuthClient::~GrpcAuthClient() {
  absl::MutexLock lock(&mu_);
  stub_.reset();      // the channel first: it reads from the reloader's directory
  reloader_.reset();  // stops polling, removes the staging directory
}

std::shared_ptr<grpc::ChannelCredentials> GrpcAuthClient::TlsCredentials() {
  if (!(Readable(paths_.ca_file) && Readable(paths_.cert_file) && Readable(paths_.key_file))) {
    // Not readable by the user the broker runs as now: what was read at load.
    watch_ = TlsWatch::kLoadedOnly;
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = loaded_.ca_bundle;
    o.pem_cert_chain = loaded_.cert_chain;
    o.pem_private_key = loaded_.private_key;
    return grpc::SslCredentials(o);
  }
  TlsReloader::Options options;
  options.staging_root = staging_dir_.empty() ? DefaultTlsStagingDir() : staging_dir_;
  options.use = "mosquitto_plugin";
  options.poll_interval = tls_poll_interval_;
  // From the set checked at load: files on disk that changed since are a renewal,
  // applied or refused like any later one.
  absl::StatusOr<std::shared_ptr<TlsReloader>> reloader =
      TlsReloader::StartWith(paths_, loaded_, options);
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
  if (reloader.ok()) {
    watch_ = TlsWatch::kStaged;
    reloader_ = *std::move(reloader);
    provider = reloader_->provider();
  } else {
    // Watched directly, as before there was a staging directory: gRPC reads the
    // files as they are, so a broken renewal fails connections until it is fixed
    // (the error names it, WatchedFilesProblem).
    log::Error(
        "tls: the TLS files cannot be staged, so they are watched directly and a broken "
        "renewal will fail connections to iotauth; set plugin_opt_tls_staging_dir to a "
        "directory only the broker's user can write",
        {{"reason", std::string(reloader.status().message())}});
    watch_ = TlsWatch::kDirect;
    // The files must then be replaced together (a rename, or Kubernetes' Secret
    // volume): a key read with the other pair's certificate fails that connection
    // attempt, and the next one, a second later, succeeds.
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        paths_.key_file, paths_.cert_file, paths_.ca_file, /*refresh_interval_sec=*/1);
  }
  grpc::experimental::TlsChannelCredentialsOptions o;
  o.set_certificate_provider(std::move(provider));
  o.watch_root_certs();
  if (!paths_.cert_file.empty()) o.watch_identity_key_cert_pairs();
  o.set_verify_server_certs(true);
  // As grpc::SslCredentials did: the server's name is checked too.
  o.set_certificate_verifier(std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  return grpc::experimental::TlsCredentials(o);
}

iv1::IdentityService::Stub* GrpcAuthClient::Stub() {
  absl::MutexLock lock(&mu_);
  if (stub_ == nullptr) {
    std::shared_ptr<grpc::ChannelCredentials> creds =
        tls_ ? TlsCredentials() : grpc::InsecureChannelCredentials();
    grpc::ChannelArguments args;
    if (!server_name_.empty()) args.SetSslTargetNameOverride(server_name_);
    // Fail calls fast while iotauth is unreachable instead of queueing them.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    stub_ = iv1::IdentityService::NewStub(grpc::CreateCustomChannel(address_, creds, args));
  }
  return stub_.get();
}

GrpcAuthClient::TlsWatch GrpcAuthClient::tls_watch() {
  absl::MutexLock lock(&mu_);
  return watch_;
}

std::optional<TlsReloader::Snapshot> GrpcAuthClient::tls_snapshot() {
  absl::MutexLock lock(&mu_);
  if (reloader_ == nullptr) return std::nullopt;
  return reloader_->snapshot();
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
    if (reloader_ != nullptr) {
      // What gRPC presents was checked; a refused renewal is worth naming all the
      // same (the pair in use may be the one about to expire). No file is read here.
      const TlsReloader::Snapshot snap = reloader_->snapshot();
      return snap.files_rejected
                 ? absl::StrCat(snap.last_rejection,
                                " (refused: the last good files are still presented)")
                 : "";
    }
    const absl::Time now = absl::Now();
    if (watch_ != TlsWatch::kDirect || now - files_checked_ < kFileCheckInterval) return "";
    files_checked_ = now;
  }
  absl::StatusOr<TlsFiles> files = ReadTlsFiles(paths_);
  if (!files.ok()) return std::string(files.status().message());
  absl::Status checked = CheckTlsFiles(*files).status();
  return checked.ok() ? "" : std::string(checked.message());
}

}  // namespace iotauth::mosquitto
