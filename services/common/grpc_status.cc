#include "services/common/grpc_status.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "proto/google/rpc/status.pb.h"

namespace iotauth {
namespace {

// What a google.protobuf.Any's type URL starts with.
constexpr absl::string_view kAnyUrlPrefix = "type.googleapis.com/";
// Details read back from a peer's trailer, at most (the rest are ignored).
constexpr int kMaxDetails = 16;

}  // namespace

namespace grpc_status_internal {

grpc::Status ToGrpcError(const absl::Status& s) {
  const auto code = static_cast<grpc::StatusCode>(s.code());
  const std::string message(s.message());
  google::rpc::Status details;
  s.ForEachPayload([&details](absl::string_view url, const absl::Cord& payload) {
    if (!absl::StartsWith(url, kAnyUrlPrefix)) return;
    google::protobuf::Any* any = details.add_details();
    any->set_type_url(std::string(url));
    any->set_value(std::string(payload));
  });
  if (details.details_size() == 0) return {code, message};
  details.set_code(static_cast<int>(s.code()));
  details.set_message(message);
  return {code, message, details.SerializeAsString()};
}

}  // namespace grpc_status_internal

absl::Status FromGrpcStatus(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  absl::Status out(static_cast<absl::StatusCode>(s.error_code()),
                   what.empty() ? s.error_message() : absl::StrCat(what, ": ", s.error_message()));
  if (s.error_details().empty()) return out;
  google::rpc::Status details;
  if (!details.ParseFromString(s.error_details())) return out;  // unreadable details: no reason
  for (int i = 0; i < details.details_size() && i < kMaxDetails; ++i) {
    const google::protobuf::Any& any = details.details(i);
    if (absl::StartsWith(any.type_url(), kAnyUrlPrefix)) {
      out.SetPayload(any.type_url(), absl::Cord(any.value()));
    }
  }
  return out;
}

}  // namespace iotauth
