// AuditGate: refuses decisions and changes while the audit log cannot record them
// (audit.when_unwritable=refuse). The sinks report when events cannot be recorded
// (the local sink at the first refused commit) and when they get through again
// (AuditPipelineObserver::OnWritable); the process turns those reports into
// SetWritable, and each producer of a decision or change (Authenticate, an audited
// Authorize decision, the registry's mutations, certificate operations) asks Admit
// before it acts. A refused call is UNAVAILABLE: nothing is decided or changed, so
// nothing goes unrecorded, and the caller's retry policy (or the broker's failure
// action, which fails closed) takes over. Reads are not gated, audited reads of
// secrets included: the identity mirror's must go on, or disables and key changes
// would not reach Authenticate.
//
// Without a gate (a null pointer in a producer's options), or with
// audit.when_unwritable=not_serving or serve, every call is admitted.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "services/common/error_info.h"

namespace iotauth::audit {

class AuditGate {
 public:
  // The refusal's stable reason (google.rpc.ErrorInfo in the error's details):
  // callers tell "iotauth is up but refuses" from "iotauth is unreachable" by it.
  static constexpr absl::string_view kRefusalReason = "AUDIT_UNWRITABLE";

  // Open until SetWritable(false).
  AuditGate() = default;
  AuditGate(const AuditGate&) = delete;
  AuditGate& operator=(const AuditGate&) = delete;

  // Called with each change of the audit log's writability.
  void SetWritable(bool writable) { open_.store(writable, std::memory_order_release); }

  // OK while the audit log records events; UNAVAILABLE, counted, while it cannot.
  // One relaxed load on the hot path.
  absl::Status Admit() const {
    if (ABSL_PREDICT_TRUE(open_.load(std::memory_order_relaxed))) return absl::OkStatus();
    refused_.fetch_add(1, std::memory_order_relaxed);
    return UnwritableError();
  }

  bool open() const { return open_.load(std::memory_order_acquire); }
  // Calls refused so far (iotauth_audit_refused_calls_total).
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

  // What a refused call is answered.
  static absl::Status UnwritableError() {
    return WithErrorReason(
        absl::UnavailableError(
            "audit: the audit log cannot record this call, so it is refused "
            "(audit.when_unwritable=refuse); retry once iotauth_audit_writable is 1 again. "
            "Operators: free space or fix the audit store, or bring the audit service back"),
        kRefusalReason);
  }
  // True for UnwritableError: a producer that records its outcomes skips the event
  // of a call the gate refused (it did nothing, and the log could not take it).
  static bool IsRefusal(const absl::Status& s) {
    return s.code() == absl::StatusCode::kUnavailable && ErrorReason(s) == kRefusalReason;
  }

 private:
  std::atomic<bool> open_{true};
  mutable std::atomic<uint64_t> refused_{0};
};

// Admit through `gate`, or OK without one.
inline absl::Status AdmitAudited(const AuditGate* gate) {
  return gate == nullptr ? absl::OkStatus() : gate->Admit();
}

}  // namespace iotauth::audit
