#include "services/common/server_runner.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.pb.h"
#include "gtest/gtest.h"
#include "proto/iotauth/audit/v1/audit.grpc.pb.h"
#include "proto/iotauth/registry/v1/registry.grpc.pb.h"
#include "services/common/config.h"

namespace iotauth {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

constexpr char kAudit[] = "iotauth.audit.v1.AuditLog";
constexpr char kLate[] = "iotauth.registry.v1.DeviceRegistry";

// Two hosted services: the audit log (serving at start) and one that waits for
// SetServing, both answering UNIMPLEMENTED; only their health matters here.
class ServerRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config::v1::ServerConfig config = DefaultConfig();
    config.mutable_grpc()->set_address("127.0.0.1:0");
    config.mutable_grpc()->mutable_tls()->set_mode(config::v1::TLS_MODE_INSECURE);
    config.mutable_metrics()->set_address("");
    std::vector<HostedService> services;
    services.push_back({kAudit, &audit_});
    services.push_back({kLate, &late_, nullptr, /*serving_at_start=*/false});
    auto runner =
        ServerRunner::Start(config, std::move(services), std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = std::move(*runner);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", runner_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
  }

  // "SERVING", "NOT_SERVING", or the call's error.
  std::string Health(const std::string& service) {
    grpc::TemplatedGenericStub<HealthCheckRequest, HealthCheckResponse> stub(channel_);
    HealthCheckRequest req;
    req.set_service(service);
    HealthCheckResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::CompletionQueue cq;
    auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", req, &cq);
    call->StartCall();
    grpc::Status status;
    call->Finish(&resp, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    const bool completed = cq.Next(&tag, &ok) && ok;
    cq.Shutdown();
    for (void* t = nullptr; cq.Next(&t, &ok);) {
    }
    if (!completed) return "no completion";
    if (!status.ok()) return absl::StrCat("error ", status.error_code());
    return HealthCheckResponse::ServingStatus_Name(resp.status());
  }

  iotauth::audit::v1::AuditLog::Service audit_;
  iotauth::registry::v1::DeviceRegistry::Service late_;
  std::unique_ptr<ServerRunner> runner_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(ServerRunnerTest, AServiceThatWaitsHoldsTheWholeServerUntilItServes) {
  EXPECT_EQ(Health(kAudit), "SERVING");
  EXPECT_EQ(Health(kLate), "NOT_SERVING");
  EXPECT_EQ(Health(""), "NOT_SERVING");
  runner_->SetServing(kLate);
  EXPECT_EQ(Health(kLate), "SERVING");
  EXPECT_EQ(Health(""), "SERVING");
}

TEST_F(ServerRunnerTest, AHoldTakesEveryServiceOutAndReleasingRestoresEachOne) {
  runner_->Hold(true);
  EXPECT_EQ(Health(kAudit), "NOT_SERVING");
  EXPECT_EQ(Health(kLate), "NOT_SERVING");
  EXPECT_EQ(Health(""), "NOT_SERVING");
  runner_->SetServing(kLate);  // ready meanwhile, but still held
  EXPECT_EQ(Health(kLate), "NOT_SERVING");
  EXPECT_EQ(Health(""), "NOT_SERVING");
  runner_->Hold(false);
  EXPECT_EQ(Health(kAudit), "SERVING");
  EXPECT_EQ(Health(kLate), "SERVING");
  EXPECT_EQ(Health(""), "SERVING");
  runner_->Hold(true);
  runner_->Hold(true);  // idempotent
  EXPECT_EQ(Health(""), "NOT_SERVING");
  runner_->Hold(false);
  EXPECT_EQ(Health(""), "SERVING");
}

TEST_F(ServerRunnerTest, NothingServesAgainAfterShutdown) {
  runner_->SetServing(kLate);
  runner_->Shutdown(absl::ZeroDuration());
  runner_->Hold(true);
  runner_->Hold(false);
  runner_->SetServing(kLate);  // no effect, no crash: the server is gone
  EXPECT_NE(Health(""), "SERVING");
}

}  // namespace
}  // namespace iotauth
