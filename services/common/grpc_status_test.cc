#include "services/common/grpc_status.h"

#include "absl/strings/cord.h"
#include "gtest/gtest.h"
#include "proto/google/rpc/status.pb.h"
#include "services/common/error_info.h"

namespace iotauth {
namespace {

TEST(GrpcStatusTest, CodesAndMessagesMapBothWays) {
  const absl::Status denied = absl::PermissionDeniedError("needs the admin role");
  const grpc::Status g = ToGrpcStatus(denied);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(g.error_message(), "needs the admin role");
  EXPECT_TRUE(g.error_details().empty());
  EXPECT_EQ(FromGrpcStatus(g), denied);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK, "GetTenant").ok());
}

TEST(GrpcStatusTest, TheCallNamePrefixesTheMessage) {
  const absl::Status s = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"), "GetTenant");
  EXPECT_EQ(s, absl::UnavailableError("GetTenant: connection refused"));
}

TEST(GrpcStatusTest, TheReasonTravelsAsGoogleRpcStatusDetails) {
  const absl::Status refused =
      WithErrorReason(absl::UnavailableError("audit log unwritable"), "AUDIT_UNWRITABLE");
  const grpc::Status g = ToGrpcStatus(refused);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(g.error_message(), "audit log unwritable");

  // What any gRPC client reads from grpc-status-details-bin.
  google::rpc::Status wire;
  ASSERT_TRUE(wire.ParseFromString(g.error_details()));
  EXPECT_EQ(wire.code(), 14);
  EXPECT_EQ(wire.message(), "audit log unwritable");
  ASSERT_EQ(wire.details_size(), 1);
  EXPECT_EQ(wire.details(0).type_url(), "type.googleapis.com/google.rpc.ErrorInfo");

  const absl::Status back = FromGrpcStatus(g, "Authenticate");
  EXPECT_EQ(back.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(back.message(), "Authenticate: audit log unwritable");
  EXPECT_EQ(ErrorReason(back), "AUDIT_UNWRITABLE");
}

TEST(GrpcStatusTest, PayloadsThatAreNotAnyMessagesStayInTheProcess) {
  absl::Status s = absl::InternalError("x");
  s.SetPayload("internal.example/marker", absl::Cord("not for the wire"));
  const grpc::Status g = ToGrpcStatus(s);
  EXPECT_TRUE(g.error_details().empty());
  EXPECT_FALSE(FromGrpcStatus(g).GetPayload("internal.example/marker").has_value());
}

TEST(GrpcStatusTest, UnreadableDetailsFromAPeerGiveNoReason) {
  const absl::Status s =
      FromGrpcStatus(grpc::Status(grpc::StatusCode::INTERNAL, "boom", std::string("\xff\xff", 2)));
  EXPECT_EQ(s, absl::InternalError("boom"));
  EXPECT_EQ(ErrorReason(s), "");

  google::rpc::Status other;  // a detail in another domain, and a non-Any URL
  google::protobuf::Any* any = other.add_details();
  any->set_type_url("example.com/x");
  any->set_value("v");
  const absl::Status t =
      FromGrpcStatus(grpc::Status(grpc::StatusCode::INTERNAL, "boom", other.SerializeAsString()));
  EXPECT_FALSE(t.GetPayload("example.com/x").has_value());
}

TEST(ErrorInfoTest, ReasonsAreIotauthsOnly) {
  EXPECT_TRUE(WithErrorReason(absl::OkStatus(), "X").ok());
  EXPECT_EQ(ErrorReason(absl::NotFoundError("x")), "");
  EXPECT_EQ(ErrorReason(WithErrorReason(absl::NotFoundError("x"), "NOT_FOUND")), "NOT_FOUND");

  absl::Status garbled = absl::NotFoundError("x");
  garbled.SetPayload(kErrorInfoTypeUrl, absl::Cord(std::string("\xff\x01", 2)));
  EXPECT_EQ(ErrorReason(garbled), "");
}

TEST(ErrorInfoTest, AFieldsReasonIsItsLastSegmentWithoutAnIndex) {
  EXPECT_EQ(InvalidFieldReason("tenant_id"), "INVALID_TENANT_ID");
  EXPECT_EQ(InvalidFieldReason("connect.password"), "INVALID_PASSWORD");
  EXPECT_EQ(InvalidFieldReason("credential.x509.chain[2]"), "INVALID_CHAIN");
  EXPECT_EQ(InvalidFieldReason("ca.certificate-pem"), "INVALID_CERTIFICATE_PEM");

  const absl::Status s = InvalidFieldError(
      "connect.client_id", "connect.client_id exceeds 256 bytes", {{"limit_bytes", "256"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "connect.client_id exceeds 256 bytes");
  EXPECT_EQ(ErrorReason(s), "INVALID_CLIENT_ID");
  EXPECT_EQ(ErrorMetadata(s, "field"), "connect.client_id");
  EXPECT_EQ(ErrorMetadata(s, "limit_bytes"), "256");
}

TEST(ErrorInfoTest, AMessagePrefixKeepsCodeAndReason) {
  EXPECT_TRUE(WithMessagePrefix(absl::OkStatus(), "x").ok());
  const absl::Status s = WithMessagePrefix(
      InvalidFieldError("connect.password", "connect.password exceeds 4096 bytes"), "requests[3].");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "requests[3].connect.password exceeds 4096 bytes");
  EXPECT_EQ(ErrorReason(s), "INVALID_PASSWORD");
  // And it reaches a remote caller.
  EXPECT_EQ(ErrorReason(FromGrpcStatus(ToGrpcStatus(s))), "INVALID_PASSWORD");
}

}  // namespace
}  // namespace iotauth
