// Counts of authentication decisions by outcome, deny reason and credential type,
// for the iotauth_identity_decisions_total metric. Record() is on the hot path: one
// relaxed atomic increment in a fixed table indexed by enum numbers (no label
// hashing, no lock, no allocation). Snapshot() is read at scrape time and lists every
// known combination, zeros included, so that a rate over a series that has just
// started counting sees its first increments.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "proto/iotauth/identity/v1/identity.pb.h"
#include "proto/iotauth/registry/v1/types.pb.h"

namespace iotauth::identity {

class DecisionCounters {
 public:
  // One label set and its count. Label values are the enum names in lower case
  // without their prefix ("allow", "bad_signature", "sas"); "none" for an allow's
  // reason and for a deny that names no credential type (a malformed request, a
  // locked-out address).
  struct Row {
    std::string decision;
    std::string reason;
    std::string credential_type;
    uint64_t count = 0;
  };

  DecisionCounters() = default;
  DecisionCounters(const DecisionCounters&) = delete;
  DecisionCounters& operator=(const DecisionCounters&) = delete;

  // Thread-safe. A reason on an allow is ignored; a value the build does not know (a
  // newer peer's enum) counts under "unknown" rather than being lost.
  void Record(iotauth::identity::v1::Decision decision, iotauth::identity::v1::DenyReason reason,
              iotauth::registry::v1::CredentialType credential_type);

  // Every allow row (one per credential type) and every deny row (each reason, each
  // credential type), in a fixed order. Thread-safe; each count is read once, so
  // rows taken during Record calls may be a few increments apart.
  std::vector<Row> Snapshot() const;

 private:
  // Index 0 is "none" (UNSPECIFIED); the last index is "unknown".
  static constexpr int kReasons = iotauth::identity::v1::DenyReason_ARRAYSIZE + 1;
  static constexpr int kCredentialTypes = iotauth::registry::v1::CredentialType_ARRAYSIZE + 1;
  static int ReasonIndex(iotauth::identity::v1::DenyReason reason);
  static int CredentialIndex(iotauth::registry::v1::CredentialType type);

  std::array<std::atomic<uint64_t>, kCredentialTypes> allow_{};
  std::array<std::array<std::atomic<uint64_t>, kCredentialTypes>, kReasons> deny_{};
};

}  // namespace iotauth::identity
