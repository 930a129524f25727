// Authorizer: the decision logic behind IdentityService.Authorize. Resolves the
// device's access rules (device rules, then its product's defaults, placeholders
// filled in) from the Directory and applies the first rule that matches the publish
// topic or subscribe filter; otherwise the default effect. No gRPC in it.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/iotauth/identity/v1/identity.pb.h"
#include "services/audit/audit_gate.h"
#include "services/audit/sink_interface.h"
#include "services/common/clock.h"
#include "services/identity/authenticator.h"
#include "services/identity/directory.h"

namespace iotauth::identity {

class Authorizer {
 public:
  struct Options {
    const Clock* clock = nullptr;            // defaults to the real clock
    const Directory* directory = nullptr;    // required
    audit::AuditSink* audit_sink = nullptr;  // optional
    // Must agree with AuthenticatorConfig::default_effect.
    iotauth::registry::v1::RuleEffect default_effect = iotauth::registry::v1::RULE_EFFECT_DENY;
    // Denies are always audited; allows only when set (publishes are frequent).
    bool audit_allows = false;
    size_t max_topic_bytes = 4096;
    // Optional: while it reads false (the registry mirror still loading) every call
    // is UNAVAILABLE ("retry"), never a deny from an empty directory. Must outlive
    // this object.
    const std::atomic<bool>* ready = nullptr;
    // Optional (audit.when_unwritable=refuse): while the audit log cannot record
    // them, a decision that would be audited (every deny; allows with audit_allows)
    // is answered UNAVAILABLE instead. Allows that are not audited are still
    // answered. Must outlive this object.
    const audit::AuditGate* audit_gate = nullptr;
  };
  static absl::StatusOr<std::unique_ptr<Authorizer>> Create(Options options);

  // Fills `response` and returns OK for allow and deny. INVALID_ARGUMENT naming the
  // field for a missing identity, an action other than PUBLISH or SUBSCRIBE, or an
  // invalid topic name (publish) or filter (subscribe). Unknown or disabled devices
  // are denied. Thread-safe.
  absl::Status Authorize(const iotauth::identity::v1::AuthorizeRequest& request,
                         const CallContext& context,
                         iotauth::identity::v1::AuthorizeResponse* response) const;

  // Decisions so far, for iotauth_identity_authorizations_total (read at scrape
  // time): decision "allow" or "deny", action "publish" or "subscribe", basis "rule"
  // (a rule matched), "default_effect" (none did) or "device" (the device is unknown,
  // not enabled, or named with another product: denied before any rule). Every
  // combination is listed, zeros included. Invalid requests are not decisions.
  struct CountRow {
    std::string decision;
    std::string action;
    std::string basis;
    uint64_t count = 0;
  };
  std::vector<CountRow> DecisionCounts() const;

 private:
  enum Basis { kRule = 0, kDefaultEffect = 1, kDevice = 2, kBases = 3 };
  // Where a decision's count lives in counts_.
  static size_t CountIndex(bool allow, bool publish, Basis basis) {
    return ((allow ? 2 : 0) + (publish ? 1 : 0)) * kBases + basis;
  }
  // [allow][publish][basis]: one relaxed increment per decision.
  mutable std::array<std::atomic<uint64_t>, 2 * 2 * kBases> counts_{};

  explicit Authorizer(Options options);
  Options options_;
  const Clock* clock_;
  audit::AuditSink* audit_;
};

}  // namespace iotauth::identity
