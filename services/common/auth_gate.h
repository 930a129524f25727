// Refuses a call whose caller is not authenticated as soon as its headers arrive,
// before gRPC reads its message. Without it the server buffered every request whole
// (up to the 16 MiB message limit, on any number of streams) before a handler
// looked at the caller: 120 unauthenticated 15 MiB calls took iotauthd from 30 to
// 841 MiB. The handlers still check roles; this only refuses callers that every
// handler would refuse: no verified client certificate and no valid bearer token.
#pragma once

#include <grpcpp/security/auth_metadata_processor.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/common/call_backlog.h"
#include "services/common/clock.h"
#include "services/common/refused_calls.h"
#include "services/common/server_security.h"

namespace iotauth {

//
// Calls to public methods (health and reflection) need no credential, but those
// that come without one share a budget, `PublicCallLimit`, and past it are refused
// RESOURCE_EXHAUSTED here. In Debian's gRPC 1.51 a client that opens streams and
// resets each at once (HTTP/2 "rapid reset", CVE-2023-44487) gets around the
// concurrent-stream cap, and every call admitted past this gate waits in a queue
// that drains slower than such a client fills it: two of them, without any
// credential, took iotauthd from 30 to 840 MiB through Health/Check. A call refused
// here is freed at once. Callers with a credential are bounded by CallBacklog: at
// most 4,096 calls admitted here and not yet started by the server, each.
// Calls to public methods without a credential admitted per second (a token
// bucket). Health checkers make a few a second; a credential skips the budget.
// Configured by `auth.public_calls_per_second` and `auth.public_calls_burst`.
struct PublicCallLimit {
  double per_second = 1000;
  double burst = 2000;
};

class EarlyAuthGate final : public grpc::AuthMetadataProcessor {
 public:
  // `resolver` and `clock` outlive the gate. Calls to methods under
  // `public_prefixes` (health checks and reflection) need no credential.
  explicit EarlyAuthGate(const ConfiguredCallerResolver* resolver,
                         std::vector<std::string> public_prefixes = DefaultPublicPrefixes(),
                         PublicCallLimit limit = {}, const Clock* clock = &RealClock::Get(),
                         CallBacklog::Options backlog = {});

  // Health checks and reflection.
  static std::vector<std::string> DefaultPublicPrefixes() {
    return {"/grpc.health.v1.Health/", "/grpc.reflection."};
  }

  // Decided on gRPC's own thread, without blocking: a hash and a comparison.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

  // The decision itself, for tests: the call's path, its `authorization` header
  // (null when absent) and the verified client certificate's subject (empty when
  // none).
  bool Admits(absl::string_view path, const absl::string_view* authorization,
              const std::string& cert_subject) const;

  // Calls refused UNAUTHENTICATED so far.
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  // Calls to public methods without a credential refused past the budget so far.
  uint64_t shed() const { return shed_.load(std::memory_order_relaxed); }
  // Authenticated calls refused because their caller had too many waiting
  // (CallBacklog) so far.
  uint64_t backlog_refused() const { return backlog_.refused(); }

  // The refusals counted above, with what each call presented, for the audit log
  // (RefusedCallReporter drains it).
  RefusedCallTally* refusals() { return &refusals_; }

  // Where the server reports calls that reached their handler or ended
  // (GrpcServerMetrics::SetCallBacklog).
  CallBacklog* backlog() { return &backlog_; }

 private:
  bool IsPublic(absl::string_view path) const;
  bool Authenticated(const absl::string_view* authorization, const std::string& cert_subject) const;
  bool TakePublicToken();
  void Tally(absl::string_view path, const absl::string_view* authorization,
             const std::string& cert_subject);

  const ConfiguredCallerResolver* resolver_;
  std::vector<std::string> public_prefixes_;
  const PublicCallLimit limit_;
  const Clock* clock_;
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> shed_{0};
  CallBacklog backlog_;
  RefusedCallTally refusals_;
  absl::Mutex bucket_mu_;
  double tokens_ ABSL_GUARDED_BY(bucket_mu_);
  absl::Time refilled_ ABSL_GUARDED_BY(bucket_mu_);
};

}  // namespace iotauth
