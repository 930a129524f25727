// Authenticator: the decision logic behind IdentityService.Authenticate, with no gRPC
// in it. Detects the credential kind in what the broker saw at CONNECT (Azure SAS
// token, device-triple HMAC, EnOS variant, X.509 through the CertificateVerifier seam)
// or takes an explicit credential, verifies it against the Directory, and answers
// allow or deny with a stable reason, the identity, expiry, resolved access rules and a
// cache TTL. Every decision is recorded on the audit sink.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/iotauth/identity/v1/identity.pb.h"
#include "services/audit/audit_gate.h"
#include "services/audit/sink_interface.h"
#include "services/common/clock.h"
#include "services/identity/attempt_limiter.h"
#include "services/identity/certificate_verifier.h"
#include "services/identity/decision_counters.h"
#include "services/identity/directory.h"
#include "services/identity/replay_cache.h"

namespace iotauth::identity {

struct AuthenticatorConfig {
  // Accepted past a SAS token's `se`.
  absl::Duration sas_clock_skew = absl::Minutes(5);
  // A triple timestamp must lie within now +/- this; replays are remembered this long.
  absl::Duration triple_timestamp_window = absl::Minutes(5);
  // Refuse Alibaba-style triple connects without a timestamp (EnOS always needs one).
  bool require_triple_timestamp = false;
  // Upper bound of the cache TTL handed to the caller (also bounded by the expiry).
  absl::Duration max_cache_ttl = absl::Minutes(5);
  // Effect when no access rule matches.
  iotauth::registry::v1::RuleEffect default_effect = iotauth::registry::v1::RULE_EFFECT_DENY;
  // Device-triple connects remembered for replay checks (about 2 x 60 + 100 bytes
  // each); a live entry is never evicted: when full, timestamped connects are denied
  // RATE_LIMITED (ReplayCache).
  size_t replay_cache_capacity = 1 << 20;
  // Enrollment groups tried for an unknown device's SAS token.
  size_t max_enrollment_groups_tried = 8;

  // Brute-force protection (0 turns a limiter off). Bad signatures and replays count
  // against the device; every credential failure counts against the source address
  // (whose threshold is higher: many devices may share a NAT or a gateway). A locked
  // device or address is denied RATE_LIMITED before any crypto runs.
  uint32_t device_max_failures = 5;
  uint32_t source_max_failures = 50;
  absl::Duration lockout_base = absl::Seconds(30);
  absl::Duration lockout_max = absl::Minutes(15);
  absl::Duration failure_memory = absl::Minutes(15);
  size_t limiter_capacity = 1 << 18;

  // Request limits: larger fields are INVALID_ARGUMENT naming the field.
  size_t max_client_id_bytes = 1024;
  size_t max_username_bytes = 1024;
  size_t max_password_bytes = 4096;
  size_t max_id_bytes = 128;  // tenant_id, request_id, device_id, product_key
  size_t max_chain_certificates = 8;
  size_t max_certificate_bytes = 16 * 1024;
};

// Per-call facts from the transport (the gRPC adapter fills them).
struct CallContext {
  // Authenticated principal of the broker or gateway (audit `caller`).
  absl::string_view caller;
};

class Authenticator {
 public:
  struct Options {
    // Defaults to the real clock.
    const Clock* clock = nullptr;
    // Required.
    const Directory* directory = nullptr;
    // Optional: devices registered by a connect are written here at once, so the next
    // connect finds them before the registry's change stream delivers them.
    DirectoryWriter* directory_writer = nullptr;
    // Optional: without it enrollment-group registration and EnOS dynamic activation
    // are refused (CREDENTIAL_TYPE_NOT_ALLOWED).
    DeviceRegistrar* registrar = nullptr;
    // Optional: without it X.509 credentials are refused (CREDENTIAL_TYPE_NOT_ALLOWED).
    const CertificateVerifier* certificate_verifier = nullptr;
    // Optional: defaults to discarding events.
    audit::AuditSink* audit_sink = nullptr;
    // Optional: while it reads false (the registry mirror still loading) every call
    // is UNAVAILABLE ("retry"), never a deny from an empty directory. Must outlive
    // this object.
    const std::atomic<bool>* ready = nullptr;
    // Optional (audit.when_unwritable=refuse): while the audit log cannot record
    // decisions, every call is UNAVAILABLE before anything is decided or counted
    // against a device. Must outlive this object.
    const audit::AuditGate* audit_gate = nullptr;
    AuthenticatorConfig config;
  };

  // INVALID_ARGUMENT when a required collaborator is missing or the config is invalid.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(Options options);

  // Decides. Fills `response` (which must be empty) and returns OK for every decision,
  // allow or deny; returns INVALID_ARGUMENT naming the field for a malformed request
  // (an oversized field), with `response` unspecified. Thread-safe.
  absl::Status Authenticate(const iotauth::identity::v1::AuthenticateRequest& request,
                            const CallContext& context,
                            iotauth::identity::v1::AuthenticateResponse* response);

  // The INVALID_ARGUMENT checks of Authenticate alone (for batch callers that refuse
  // a whole batch before deciding any entry).
  absl::Status ValidateRequest(const iotauth::identity::v1::AuthenticateRequest& request) const;

  // The brute-force limiters' state, for metrics (read at scrape time).
  struct LimiterStats {
    bool enabled = false;
    size_t tracked = 0;      // keys with recent failures
    uint64_t evictions = 0;  // keys dropped to make room (a sign of key spraying)
  };
  LimiterStats device_limiter_stats() const;
  LimiterStats source_limiter_stats() const;

  // Every decision so far, by outcome, deny reason and credential type (for the
  // iotauth_identity_decisions_total metric, read at scrape time).
  const DecisionCounters& decisions() const { return decisions_; }

  // Convenience for tests and tools.
  absl::StatusOr<iotauth::identity::v1::AuthenticateResponse> Authenticate(
      const iotauth::identity::v1::AuthenticateRequest& request, const CallContext& context = {});

  ~Authenticator();

 private:
  class Attempt;
  explicit Authenticator(Options options, std::string request_id_prefix);

  Options options_;
  const Clock* clock_;
  audit::AuditSink* audit_;
  ReplayCache replay_;
  std::unique_ptr<AttemptLimiter> device_limiter_;  // null when off
  std::unique_ptr<AttemptLimiter> source_limiter_;  // null when off
  std::string request_id_prefix_;
  std::atomic<uint64_t> request_counter_{0};
  DecisionCounters decisions_;
};

}  // namespace iotauth::identity
