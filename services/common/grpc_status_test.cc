#include "services/common/grpc_status.h"

#include "gtest/gtest.h"

namespace iotauth {
namespace {

TEST(GrpcStatusTest, CodesAndMessagesMapBothWays) {
  const absl::Status denied = absl::PermissionDeniedError("needs the admin role");
  const grpc::Status g = ToGrpcStatus(denied);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(g.error_message(), "needs the admin role");
  EXPECT_EQ(FromGrpcStatus(g), denied);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK, "GetTenant").ok());
}

TEST(GrpcStatusTest, TheCallNamePrefixesTheMessage) {
  const absl::Status s = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"), "GetTenant");
  EXPECT_EQ(s, absl::UnavailableError("GetTenant: connection refused"));
}

}  // namespace
}  // namespace iotauth
