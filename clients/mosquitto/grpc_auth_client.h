// AuthClient over iotauth's gRPC contract (iotauth.identity.v1.IdentityService),
// with mutual TLS from files and a per-call deadline. The channel is created on the
// first call, so a broker that forks to daemonize after loading plugins does not
// inherit gRPC threads.
//
// The TLS files are checked at load (each parses, the key belongs to the
// certificate). While the broker runs they are watched through a TlsReloader, as
// iotauthd watches its own: a renewed set is checked (parses, key matches, not
// expired, read the same twice) and staged in a private directory
// (plugin_opt_tls_staging_dir), and gRPC reads only from there. A renewal that wrote
// a mismatched, partial or expired pair is refused and named in the broker's log,
// and new connections to iotauth keep presenting the last good pair.
//
// If the staging directory cannot be made private, the files are watched directly
// (gRPC's FileWatcherCertificateProvider, which loads whatever it reads) and the log
// says so. If the broker's user cannot read the files once it has dropped root
// (they were read at load, as root), the contents read then are used: a renewal then
// needs a restart. Either way, when iotauth cannot be reached, the error says
// whether the files on disk fail their check (looked at most every 10 s).
#pragma once

#include <grpcpp/security/credentials.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "clients/mosquitto/plugin_config.h"
#include "clients/mosquitto/plugin_core.h"
#include "proto/iotauth/identity/v1/identity.grpc.pb.h"
#include "services/common/tls_files.h"
#include "services/common/tls_reloader.h"

namespace iotauth::mosquitto {

class GrpcAuthClient final : public AuthClient {
 public:
  // Reads and checks the TLS files now; INVALID_ARGUMENT naming one that cannot be
  // read or does not check (a key that is not the certificate's, a damaged PEM).
  // `tls_poll_interval`: how often the watched files are read (tests shorten it).
  static absl::StatusOr<std::unique_ptr<GrpcAuthClient>> Create(
      const PluginConfig& config, absl::Duration tls_poll_interval = absl::Seconds(1));
  ~GrpcAuthClient() override;

  // How the TLS files are watched once the first call made the channel.
  enum class TlsWatch { kNone, kStaged, kDirect, kLoadedOnly };
  TlsWatch tls_watch();
  // The reloader's view (kStaged only).
  std::optional<TlsReloader::Snapshot> tls_snapshot();

  absl::StatusOr<iotauth::identity::v1::AuthenticateResponse> Authenticate(
      const iotauth::identity::v1::AuthenticateRequest& request, absl::Duration timeout) override;

 private:
  GrpcAuthClient() = default;
  iotauth::identity::v1::IdentityService::Stub* Stub();
  // Why the watched TLS files, read again now, would fail a handshake; empty when
  // they check, when they are not watched, or when checked less than 10 s ago.
  std::string WatchedFilesProblem();
  std::shared_ptr<grpc::ChannelCredentials> TlsCredentials() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::string address_;
  std::string server_name_;
  std::string staging_dir_;  // empty: DefaultTlsStagingDir() at the first call
  absl::Duration tls_poll_interval_;
  bool tls_ = false;
  TlsSourcePaths paths_;
  TlsFiles loaded_;  // as read at load; the key: SECRET
  absl::Mutex mu_;
  std::unique_ptr<iotauth::identity::v1::IdentityService::Stub> stub_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<TlsReloader> reloader_ ABSL_GUARDED_BY(mu_);
  TlsWatch watch_ ABSL_GUARDED_BY(mu_) = TlsWatch::kNone;
  absl::Time files_checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace iotauth::mosquitto
