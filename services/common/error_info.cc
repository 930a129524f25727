#include "services/common/error_info.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
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

google::rpc::ErrorInfo NewErrorInfo(
    absl::string_view reason,
    std::initializer_list<std::pair<absl::string_view, absl::string_view>> metadata) {
  google::rpc::ErrorInfo info;
  info.set_reason(std::string(reason));
  info.set_domain(std::string(kErrorDomain));
  for (const auto& [key, value] : metadata) {
    (*info.mutable_metadata())[std::string(key)] = std::string(value);
  }
  return info;
}

}  // namespace

absl::Status WithErrorReason(
    absl::Status s, absl::string_view reason,
    std::initializer_list<std::pair<absl::string_view, absl::string_view>> metadata) {
  if (s.ok()) return s;
  google::rpc::ErrorInfo info = NewErrorInfo(reason, metadata);
  s.SetPayload(kErrorInfoTypeUrl, absl::Cord(info.SerializeAsString()));
  return s;
}

std::string InvalidFieldReason(absl::string_view field) {
  const size_t dot = field.rfind('.');
  absl::string_view last = dot == absl::string_view::npos ? field : field.substr(dot + 1);
  const size_t bracket = last.find('[');
  if (bracket != absl::string_view::npos) last = last.substr(0, bracket);
  std::string reason = "INVALID_";
  for (char c : last) {
    reason.push_back(absl::ascii_isalnum(static_cast<unsigned char>(c))
                         ? absl::ascii_toupper(static_cast<unsigned char>(c))
                         : '_');
  }
  return reason;
}

absl::Status InvalidFieldError(
    absl::string_view field, absl::string_view message,
    std::initializer_list<std::pair<absl::string_view, absl::string_view>> metadata) {
  absl::Status s = absl::InvalidArgumentError(message);
  google::rpc::ErrorInfo info = NewErrorInfo(InvalidFieldReason(field), metadata);
  (*info.mutable_metadata())["field"] = std::string(field);
  s.SetPayload(kErrorInfoTypeUrl, absl::Cord(info.SerializeAsString()));
  return s;
}

absl::Status WithMessagePrefix(const absl::Status& s, absl::string_view prefix) {
  if (s.ok()) return s;
  absl::Status out(s.code(), absl::StrCat(prefix, s.message()));
  s.ForEachPayload(
      [&out](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
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
