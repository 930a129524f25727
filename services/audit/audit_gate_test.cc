#include "services/audit/audit_gate.h"

#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"

namespace iotauth::audit {
namespace {

TEST(AuditGateTest, AdmitsUntilTheLogIsUnwritableAndAgainOnceItIsWritable) {
  AuditGate gate;
  EXPECT_TRUE(gate.open());
  EXPECT_TRUE(gate.Admit().ok());
  gate.SetWritable(false);
  EXPECT_FALSE(gate.open());
  absl::Status refused = gate.Admit();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  // The answer says why and what to do: retry; operators free space or fix the store.
  EXPECT_TRUE(absl::StrContains(refused.message(), "audit.when_unwritable=refuse")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "retry")) << refused;
  EXPECT_EQ(gate.Admit().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(gate.refused(), 2u);
  gate.SetWritable(true);
  EXPECT_TRUE(gate.Admit().ok());
  EXPECT_EQ(gate.refused(), 2u);  // admitted calls are not counted
}

TEST(AuditGateTest, ARefusalCarriesAStableReasonAcrossProcesses) {
  AuditGate gate;
  gate.SetWritable(false);
  const absl::Status refused = gate.Admit();
  EXPECT_EQ(ErrorReason(refused), "AUDIT_UNWRITABLE");
  EXPECT_TRUE(AuditGate::IsRefusal(refused));
  // A caller in another process (the Mosquitto plugin, the split-mode services)
  // tells the refusal from an unreachable server by the reason in the details.
  EXPECT_TRUE(AuditGate::IsRefusal(FromGrpcStatus(ToGrpcStatus(refused), "Authenticate")));
  EXPECT_FALSE(AuditGate::IsRefusal(absl::UnavailableError("connection refused")));
  EXPECT_FALSE(AuditGate::IsRefusal(
      WithErrorReason(absl::InternalError("wrong code"), AuditGate::kRefusalReason)));
}

TEST(AuditGateTest, NoGateAdmitsEverything) {
  EXPECT_TRUE(AdmitAudited(nullptr).ok());
  AuditGate gate;
  gate.SetWritable(false);
  EXPECT_EQ(AdmitAudited(&gate).code(), absl::StatusCode::kUnavailable);
}

TEST(AuditGateTest, CountsEveryRefusalAcrossThreads) {
  AuditGate gate;
  gate.SetWritable(false);
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&gate] {
      for (int i = 0; i < 1000; ++i) EXPECT_FALSE(gate.Admit().ok());
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(gate.refused(), 4000u);
}

}  // namespace
}  // namespace iotauth::audit
