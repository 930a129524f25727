// AuthClient over iotauth's gRPC contract (iotauth.identity.v1.IdentityService),
// with mutual TLS from files and a per-call deadline. The channel is created on the
// first call, so a broker that forks to daemonize after loading plugins does not
// inherit gRPC threads. The TLS files are read again every second (gRPC's
// FileWatcherCertificateProvider): a renewed client certificate is presented on the
// next connection without restarting the broker. If the broker's user cannot read
// them once it has dropped root (they were read at load, as root), the contents read
// then are used, as before: a renewal then needs a restart.
//
// The files are checked at load (each parses, the key belongs to the certificate),
// and again when iotauth cannot be reached (at most every 10 s): a renewal that
// wrote a mismatched or partial pair breaks every new TLS connection, and the
// broker's log then says so instead of only "UNAVAILABLE".
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "clients/mosquitto/plugin_config.h"
#include "clients/mosquitto/plugin_core.h"
#include "proto/iotauth/identity/v1/identity.grpc.pb.h"
#include "services/common/tls_files.h"

namespace iotauth::mosquitto {

class GrpcAuthClient final : public AuthClient {
 public:
  // Reads and checks the TLS files now; INVALID_ARGUMENT naming one that cannot be
  // read or does not check (a key that is not the certificate's, a damaged PEM).
  static absl::StatusOr<std::unique_ptr<GrpcAuthClient>> Create(const PluginConfig& config);

  absl::StatusOr<iotauth::identity::v1::AuthenticateResponse> Authenticate(
      const iotauth::identity::v1::AuthenticateRequest& request, absl::Duration timeout) override;

 private:
  GrpcAuthClient() = default;
  iotauth::identity::v1::IdentityService::Stub* Stub();
  // Why the watched TLS files, read again now, would fail a handshake; empty when
  // they check, when they are not watched, or when checked less than 10 s ago.
  std::string WatchedFilesProblem();

  std::string address_;
  std::string server_name_;
  bool tls_ = false;
  TlsSourcePaths paths_;
  TlsFiles loaded_;  // as read at load; the key: SECRET
  absl::Mutex mu_;
  std::unique_ptr<iotauth::identity::v1::IdentityService::Stub> stub_ ABSL_GUARDED_BY(mu_);
  bool watching_files_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time files_checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace iotauth::mosquitto
