// Serves a TLS endpoint's certificate, private key and CA bundle from files that may
// be replaced while the process runs (cert-manager's Secret volume, a renewal job),
// without a restart. Each new set is checked before gRPC sees it (CheckTlsFiles, and
// not expired); a half-written, mismatched or expired set is refused, logged and
// counted, and new connections keep getting the last good one. gRPC reads only
// checked sets: they are staged in a private directory and swapped in with one
// rename, the way FileWatcherCertificateProvider asks its files to be updated.
#pragma once

#include <grpcpp/security/tls_certificate_provider.h>
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "services/common/clock.h"
#include "services/common/posix_file.h"
#include "services/common/tls_files.h"

namespace iotauth {

class TlsReloader final : public prometheus::Collectable {
 public:
  struct Options {
    // The private staging directory is made under it (created when missing); a
    // directory there left by a process that is gone is removed at start.
    std::string staging_root;
    // Names this endpoint in metrics (label `use`) and log lines.
    std::string use = "server";
    // How often the files are read for a change. A change is acted on once two
    // reads in a row agree (a writer may be half-way through), so a new set is in
    // force within about two intervals plus gRPC's own one-second refresh.
    absl::Duration poll_interval = absl::Seconds(1);
    const Clock* clock = &RealClock::Get();
    // False in unit tests: they call Poll() themselves.
    bool poll_thread = true;
  };

  // Reads and checks the files (an error names what to fix), stages them and makes
  // the provider. An expired certificate is served with a warning: refusing to start
  // would not bring a valid one.
  static absl::StatusOr<std::shared_ptr<TlsReloader>> Start(const TlsSourcePaths& paths,
                                                            Options options);
  // The same, from `initial`: a set read from `paths` earlier (checked again here).
  // The files on disk are polled as usual, so a set there that differs from it is a
  // change: applied once checked, refused otherwise. For a host that read its files
  // at load and makes its channel later (the Mosquitto plugin, after the broker
  // forked and dropped root).
  static absl::StatusOr<std::shared_ptr<TlsReloader>> StartWith(const TlsSourcePaths& paths,
                                                                TlsFiles initial, Options options);
  // Stops polling and removes the staging directory.
  ~TlsReloader() override;
  TlsReloader(const TlsReloader&) = delete;
  TlsReloader& operator=(const TlsReloader&) = delete;

  // What gRPC's TLS credentials read from (the staged files, refreshed every second).
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider() const {
    return provider_;
  }
  bool has_ca() const { return !paths_.ca_file.empty(); }
  bool has_identity() const { return !paths_.cert_file.empty(); }

  // One look at the files; the poll thread calls it every poll_interval.
  void Poll();

  struct Snapshot {
    TlsCertificateInfo served;    // the certificate new connections get
    uint64_t applied = 0;         // new sets put in force since start
    uint64_t rejected = 0;        // distinct new sets refused
    bool files_rejected = false;  // the files on disk now are a refused set
    std::string last_rejection;   // why, for logs and tests
    std::string staged_dir;       // the directory gRPC reads ("<dir>/live")
  };
  Snapshot snapshot() const;

  // iotauth_tls_certificate_expiry_timestamp_seconds (with an identity),
  // iotauth_tls_reloads_total and iotauth_tls_files_rejected, labelled use="<use>".
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  TlsReloader(TlsSourcePaths paths, Options options);

  // Writes `files` as a new generation and points "live" at it.
  absl::Status Stage(const TlsFiles& files) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Apply(const TlsFiles& files, const std::string& fingerprint)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Reject(const absl::Status& why, const std::string& fingerprint)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();

  const TlsSourcePaths paths_;
  const Options options_;
  std::string dir_;  // the private staging directory
  std::unique_ptr<posix_file::FileLock> dir_lock_;
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider_;

  mutable absl::Mutex mu_;
  TlsFiles served_ ABSL_GUARDED_BY(mu_);
  TlsCertificateInfo served_info_ ABSL_GUARDED_BY(mu_);
  std::string served_fingerprint_ ABSL_GUARDED_BY(mu_);
  std::string seen_fingerprint_ ABSL_GUARDED_BY(mu_);      // the last read, for stability
  std::string rejected_fingerprint_ ABSL_GUARDED_BY(mu_);  // the set last refused
  std::string last_rejection_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_mtime_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
  bool files_rejected_ ABSL_GUARDED_BY(mu_) = false;

  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace iotauth
