#include "services/common/error_info.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/types/optional.h"
#include "proto/google/rpc/error_details.pb.h"

namespace iotauth {

namespace {

// The ErrorInfo of `s` in iotauth's domain, if it has one.
absl::optional<google::rpc::ErrorInfo> IotauthErrorInfo(const absl::Status& s) {
  const absl::optional<absl::Cord> payload = s.GetPayload(kErrorInfoTypeUrl);
  if (!payload.has_value()) return absl::nullopt;
  google::rpc::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload)) || info.domain() != kErrorDomain) {
    return absl::nullopt;
  }
  return info;
}

}  // namespace

absl::Status WithErrorReason(
    absl::Status s, absl::string_view reason,
    std::initializer_list<std::pair<absl::string_view, absl::string_view>> metadata) {
  if (s.ok()) return s;
  google::rpc::ErrorInfo info;
  info.set_reason(std::string(reason));
  info.set_domain(std::string(kErrorDomain));
  for (const auto& [key, value] : metadata) {
    (*info.mutable_metadata())[std::string(key)] = std::string(value);
  }
  s.SetPayload(kErrorInfoTypeUrl, absl::Cord(info.SerializeAsString()));
  return s;
}

std::string ErrorReason(const absl::Status& s) {
  absl::optional<google::rpc::ErrorInfo> info = IotauthErrorInfo(s);
  return info.has_value() ? std::move(*info->mutable_reason()) : std::string();
}

std::string ErrorMetadata(const absl::Status& s, absl::string_view key) {
  const absl::optional<google::rpc::ErrorInfo> info = IotauthErrorInfo(s);
  if (!info.has_value()) return "";
  const auto it = info->metadata().find(std::string(key));
  return it == info->metadata().end() ? std::string() : it->second;
}

}  // namespace iotauth
