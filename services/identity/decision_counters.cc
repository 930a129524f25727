#include "services/identity/decision_counters.h"

#include "absl/strings/ascii.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace iotauth::identity {
namespace {

namespace reg = ::iotauth::registry::v1;

// "DENY_REASON_BAD_SIGNATURE" -> "bad_signature"; "" (a number with no name) and the
// UNSPECIFIED value -> "none".
std::string LabelValue(const std::string& enum_name, absl::string_view prefix) {
  absl::string_view s = enum_name;
  if (!absl::ConsumePrefix(&s, prefix) || s.empty() || s == "UNSPECIFIED") return "none";
  return absl::AsciiStrToLower(s);
}

}  // namespace

int DecisionCounters::ReasonIndex(v1::DenyReason reason) {
  return v1::DenyReason_IsValid(reason) ? static_cast<int>(reason) : kReasons - 1;
}

int DecisionCounters::CredentialIndex(reg::CredentialType type) {
  return reg::CredentialType_IsValid(type) ? static_cast<int>(type) : kCredentialTypes - 1;
}

void DecisionCounters::Record(v1::Decision decision, v1::DenyReason reason,
                              reg::CredentialType credential_type) {
  const int c = CredentialIndex(credential_type);
  if (decision == v1::DECISION_ALLOW) {
    allow_[c].fetch_add(1, std::memory_order_relaxed);
  } else {
    // Anything but an allow is a deny (fail closed), UNSPECIFIED included.
    deny_[ReasonIndex(reason)][c].fetch_add(1, std::memory_order_relaxed);
  }
}

std::vector<DecisionCounters::Row> DecisionCounters::Snapshot() const {
  // Numbers either enum leaves unnamed are skipped (nothing counts there:
  // ReasonIndex and CredentialIndex send them to "unknown"); listing them would
  // repeat the "none" label set. An unnamed credential type keeps an empty label.
  std::array<std::string, kCredentialTypes> types;
  for (int c = 0; c < kCredentialTypes - 1; ++c) {
    if (reg::CredentialType_IsValid(c)) {
      types[c] = LabelValue(reg::CredentialType_Name(c), "CREDENTIAL_TYPE_");
    }
  }
  types[kCredentialTypes - 1] = "unknown";
  std::vector<Row> rows;
  rows.reserve(static_cast<size_t>(kCredentialTypes) * (kReasons + 1));
  for (int c = 0; c < kCredentialTypes; ++c) {
    if (types[c].empty()) continue;
    rows.push_back({"allow", "none", types[c], allow_[c].load(std::memory_order_relaxed)});
  }
  for (int r = 0; r < kReasons; ++r) {
    std::string reason = "unknown";
    if (r < kReasons - 1) {
      if (!v1::DenyReason_IsValid(r)) continue;
      reason = LabelValue(v1::DenyReason_Name(r), "DENY_REASON_");
    }
    for (int c = 0; c < kCredentialTypes; ++c) {
      if (types[c].empty()) continue;
      rows.push_back({"deny", reason, types[c], deny_[r][c].load(std::memory_order_relaxed)});
    }
  }
  return rows;
}

}  // namespace iotauth::identity
