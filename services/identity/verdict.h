// The outcome of one verification step: pass, or a stable DenyReason with a detail
// string that never contains a secret.
#pragma once

#include <string>
#include <utility>

#include "proto/iotauth/identity/v1/identity.pb.h"

namespace iotauth::identity {

using DenyReason = iotauth::identity::v1::DenyReason;

struct Verdict {
  // DENY_REASON_UNSPECIFIED means the step passed.
  DenyReason reason = iotauth::identity::v1::DENY_REASON_UNSPECIFIED;
  std::string detail;

  bool ok() const { return reason == iotauth::identity::v1::DENY_REASON_UNSPECIFIED; }
  static Verdict Pass() { return Verdict(); }
  static Verdict Deny(DenyReason reason, std::string detail) {
    Verdict v;
    v.reason = reason;
    v.detail = std::move(detail);
    return v;
  }
};

}  // namespace iotauth::identity
