#include "services/common/error_info.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/types/optional.h"
#include "proto/google/rpc/error_details.pb.h"

namespace iotauth {

absl::Status WithErrorReason(absl::Status s, absl::string_view reason) {
  if (s.ok()) return s;
  google::rpc::ErrorInfo info;
  info.set_reason(std::string(reason));
  info.set_domain(std::string(kErrorDomain));
  s.SetPayload(kErrorInfoTypeUrl, absl::Cord(info.SerializeAsString()));
  return s;
}

std::string ErrorReason(const absl::Status& s) {
  const absl::optional<absl::Cord> payload = s.GetPayload(kErrorInfoTypeUrl);
  if (!payload.has_value()) return "";
  google::rpc::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload)) || info.domain() != kErrorDomain) return "";
  return std::move(*info.mutable_reason());
}

}  // namespace iotauth
