// The one place absl::Status becomes grpc::Status (codes map one to one).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace iotauth {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace iotauth
