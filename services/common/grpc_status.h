// The one place absl::Status and grpc::Status become each other (codes map one to
// one).
#pragma once

#include <grpcpp/support/status.h>

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace iotauth {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// A call's outcome as an absl::Status; a non-empty `what` (the method, say)
// prefixes the message: "GetTenant: <message>".
inline absl::Status FromGrpcStatus(const grpc::Status& s, absl::string_view what = {}) {
  if (s.ok()) return absl::OkStatus();
  return {static_cast<absl::StatusCode>(s.error_code()),
          what.empty() ? s.error_message() : absl::StrCat(what, ": ", s.error_message())};
}

// A unary handler's ending: an OK result moves into the response, an error maps.
template <typename T>
grpc::Status RespondWith(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace iotauth
