// The one place absl::Status and grpc::Status become each other (codes map one to
// one). Payloads whose type URL is a google.protobuf.Any URL
// ("type.googleapis.com/...", such as the google.rpc.ErrorInfo of error_info.h)
// travel as google.rpc.Status details in the grpc-status-details-bin trailer, so a
// caller in another process (or grpcurl, buf curl, python grpc_status) reads the
// same stable reason; other payloads stay in the process.
#pragma once

#include <grpcpp/support/status.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iotauth {

namespace grpc_status_internal {
grpc::Status ToGrpcError(const absl::Status& s);
}  // namespace grpc_status_internal

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc_status_internal::ToGrpcError(s);
}

// A call's outcome as an absl::Status, its details back as payloads; a non-empty
// `what` (the method, say) prefixes the message: "GetTenant: <message>".
absl::Status FromGrpcStatus(const grpc::Status& s, absl::string_view what = {});

// A unary handler's ending: an OK result moves into the response, an error maps.
template <typename T>
grpc::Status RespondWith(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace iotauth
