#include "services/identity/identity_service.h"

#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"
#include "services/identity/directory_cache.h"
#include "services/identity/sas_token.h"

namespace iotauth::identity {
namespace {

namespace v1 = ::iotauth::identity::v1;
namespace reg = ::iotauth::registry::v1;

// The stable reason a remote caller reads from the status details.
std::string WireReason(const grpc::Status& s) { return ErrorReason(FromGrpcStatus(s)); }
std::string WireMetadata(const grpc::Status& s, absl::string_view key) {
  return ErrorMetadata(FromGrpcStatus(s), key);
}

class FixedCallerResolver final : public CallerResolver {
 public:
  Caller Resolve(const grpc::ServerContextBase& /*context*/) const override { return caller; }
  Caller caller;
};

class IdentityServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = *DirectoryCache::Create({});
    reg::Tenant t;
    t.set_id("t1");
    t.set_hub_host("hub.example.net");
    ASSERT_TRUE(cache_->UpsertTenant(t).ok());
    reg::Product p;
    p.set_tenant_id("t1");
    p.set_product_key("pk");
    p.add_allowed_credential_types(reg::CREDENTIAL_TYPE_SAS);
    ASSERT_TRUE(cache_->UpsertProduct(p).ok());
    reg::Device d;
    d.set_tenant_id("t1");
    d.set_device_id("d1");
    d.set_product_key("pk");
    d.set_status(reg::DEVICE_STATUS_ENABLED);
    d.mutable_credentials()->mutable_symmetric_key()->set_primary_key("cGFzc3dvcmQ=");
    ASSERT_TRUE(cache_->UpsertDevice(d).ok());

    Authenticator::Options ao;
    ao.clock = &clock_;
    ao.directory = cache_.get();
    auto auth = Authenticator::Create(ao);
    ASSERT_TRUE(auth.ok());
    resolver_.caller.authenticated = true;
    resolver_.caller.principal = "gw";
    resolver_.caller.roles = static_cast<uint32_t>(Role::kGateway);
    auto svc =
        IdentityService::Create({std::shared_ptr<Authenticator>(std::move(*auth)), &resolver_});
    ASSERT_TRUE(svc.ok());
    service_ = *std::move(svc);

    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::IdentityService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  v1::AuthenticateRequest Request() {
    v1::AuthenticateRequest r;
    r.mutable_connect()->set_client_id("d1");
    r.mutable_connect()->set_password(
        *MakeSasToken("hub.example.net/devices/d1", "cGFzc3dvcmQ=", clock_.Now() + absl::Hours(1)));
    return r;
  }

  grpc::Status Call(const v1::AuthenticateRequest& r, v1::AuthenticateResponse* resp) {
    grpc::ClientContext ctx;
    return stub_->Authenticate(&ctx, r, resp);
  }

  FakeClock clock_;
  std::unique_ptr<DirectoryCache> cache_;
  FixedCallerResolver resolver_;
  std::unique_ptr<IdentityService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::IdentityService::Stub> stub_;
};

TEST_F(IdentityServiceTest, AllowAndDenyAreOkResponses) {
  v1::AuthenticateResponse resp;
  ASSERT_TRUE(Call(Request(), &resp).ok());
  EXPECT_EQ(resp.decision(), v1::DECISION_ALLOW);
  auto bad = Request();
  bad.mutable_connect()->set_client_id("d2");
  resp.Clear();
  ASSERT_TRUE(Call(bad, &resp).ok());
  EXPECT_EQ(resp.decision(), v1::DECISION_DENY);
  EXPECT_EQ(resp.deny_reason(), v1::DENY_REASON_IDENTITY_MISMATCH);
}

TEST_F(IdentityServiceTest, MalformedRequestIsInvalidArgument) {
  auto r = Request();
  r.mutable_connect()->set_password(std::string(10000, 'x'));
  v1::AuthenticateResponse resp;
  grpc::Status s = Call(r, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("connect.password"), std::string::npos);
  EXPECT_EQ(WireReason(s), "INVALID_PASSWORD");
  EXPECT_EQ(WireMetadata(s, "field"), "connect.password");
  EXPECT_EQ(WireMetadata(s, "limit_bytes"), "4096");
}

TEST_F(IdentityServiceTest, Batch) {
  v1::AuthenticateBatchRequest batch;
  *batch.add_requests() = Request();
  auto bad = Request();
  bad.mutable_connect()->set_client_id("d2");
  *batch.add_requests() = bad;
  {
    grpc::ClientContext ctx;
    v1::AuthenticateBatchResponse resp;
    ASSERT_TRUE(stub_->AuthenticateBatch(&ctx, batch, &resp).ok());
    ASSERT_EQ(resp.responses_size(), 2);
    EXPECT_EQ(resp.responses(0).decision(), v1::DECISION_ALLOW);
    EXPECT_EQ(resp.responses(1).deny_reason(), v1::DENY_REASON_IDENTITY_MISMATCH);
  }
  batch.mutable_requests(1)->mutable_connect()->set_password(std::string(10000, 'x'));
  {
    grpc::ClientContext ctx;
    v1::AuthenticateBatchResponse resp;
    grpc::Status s = stub_->AuthenticateBatch(&ctx, batch, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("requests[1].connect.password"), std::string::npos)
        << s.error_message();
    // The entry's reason survives the index prefix.
    EXPECT_EQ(WireReason(s), "INVALID_PASSWORD");
    EXPECT_EQ(WireMetadata(s, "field"), "connect.password");
  }
  {
    grpc::ClientContext ctx;
    v1::AuthenticateBatchResponse resp;
    grpc::Status s = stub_->AuthenticateBatch(&ctx, v1::AuthenticateBatchRequest(), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(WireReason(s), "INVALID_REQUESTS");
    EXPECT_FALSE(WireMetadata(s, "limit_entries").empty());
  }
}

TEST_F(IdentityServiceTest, RequiresGatewayRole) {
  v1::AuthenticateResponse resp;
  resolver_.caller.roles = static_cast<uint32_t>(Role::kReader);
  EXPECT_EQ(Call(Request(), &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  resolver_.caller.authenticated = false;
  EXPECT_EQ(Call(Request(), &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  resolver_.caller.authenticated = true;
  resolver_.caller.roles = static_cast<uint32_t>(Role::kAdmin);
  EXPECT_TRUE(Call(Request(), &resp).ok());
}

TEST_F(IdentityServiceTest, AuthorizeWithoutAuthorizerIsUnimplemented) {
  grpc::ClientContext ctx;
  v1::AuthorizeResponse resp;
  grpc::Status s = stub_->Authorize(&ctx, v1::AuthorizeRequest(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(WireReason(s), "AUTHORIZE_DISABLED");
}

// Sum of the samples of `family` whose labels include all of `want` (counter
// values, or histogram sample counts).
double MetricValue(prometheus::Registry& registry, const std::string& family,
                   const std::map<std::string, std::string>& want) {
  double total = 0;
  for (const auto& f : registry.Collect()) {
    if (f.name != family) continue;
    for (const auto& m : f.metric) {
      size_t matched = 0;
      for (const auto& l : m.label) {
        auto it = want.find(l.name);
        if (it != want.end() && it->second == l.value) ++matched;
      }
      if (matched != want.size()) continue;
      total += f.type == prometheus::MetricType::Histogram
                   ? static_cast<double>(m.histogram.sample_count)
                   : m.counter.value;
    }
  }
  return total;
}

// The hot methods record the gRPC server metrics in the handler, and the
// interceptor skips them: every call is counted exactly once, under its code.
TEST_F(IdentityServiceTest, HandlerMetricsCountEachCallOnce) {
  server_->Shutdown();
  auto registry = std::make_shared<prometheus::Registry>();
  GrpcServerMetrics metrics(*registry);
  metrics.RegisterServices({"iotauth.identity.v1.IdentityService"});
  service_->AttachMetrics(&metrics);
  grpc::ServerBuilder builder;
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(metrics.InterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(creators));
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  ASSERT_NE(server_, nullptr);
  stub_ = v1::IdentityService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));

  v1::AuthenticateResponse resp;
  ASSERT_TRUE(Call(Request(), &resp).ok());
  ASSERT_TRUE(Call(Request(), &resp).ok());
  auto bad = Request();
  bad.mutable_connect()->set_password(std::string(10000, 'x'));
  EXPECT_EQ(Call(bad, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext ctx;
  v1::AuthorizeResponse authz;
  EXPECT_EQ(stub_->Authorize(&ctx, v1::AuthorizeRequest(), &authz).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);

  const std::map<std::string, std::string> authn = {
      {"grpc_service", "iotauth.identity.v1.IdentityService"},
      {"grpc_method", "Authenticate"},
      {"grpc_type", "unary"}};
  auto with_code = [&](const char* code) {
    auto labels = authn;
    labels["grpc_code"] = code;
    return labels;
  };
  EXPECT_EQ(MetricValue(*registry, "grpc_server_started_total", authn), 3);
  EXPECT_EQ(MetricValue(*registry, "grpc_server_handled_total", with_code("OK")), 2);
  EXPECT_EQ(MetricValue(*registry, "grpc_server_handled_total", with_code("INVALID_ARGUMENT")), 1);
  EXPECT_EQ(MetricValue(*registry, "grpc_server_handling_seconds", authn), 3);
  EXPECT_EQ(MetricValue(*registry, "grpc_server_handled_total",
                        {{"grpc_method", "Authorize"}, {"grpc_code", "UNIMPLEMENTED"}}),
            1);
  EXPECT_EQ(MetricValue(*registry, "grpc_server_started_total", {{"grpc_method", "Authorize"}}), 1);
}

TEST(IdentityServiceCreateTest, Validates) { EXPECT_FALSE(IdentityService::Create({}).ok()); }

}  // namespace
}  // namespace iotauth::identity
