#include "services/common/grpc_metrics.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "proto/iotauth/identity/v1/identity.pb.h"

namespace iotauth {
namespace {

// The registry in the Prometheus text format, as /metrics serves it.
std::string Text(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

// Number of series (samples of the counter families, one per label set) whose
// exposition line starts with `name{`.
int Series(prometheus::Registry& registry, const std::string& name) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(Text(registry), '\n')) {
    if (absl::StartsWith(line, name + "{")) ++n;
  }
  return n;
}

class GrpcServerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Links identity.proto into the generated pool, as the server's services do.
    (void)iotauth::identity::v1::AuthenticateRequest::descriptor();
    metrics_.RegisterServices({"iotauth.identity.v1.IdentityService"});
  }

  prometheus::Registry registry_;
  GrpcServerMetrics metrics_{registry_};
};

TEST_F(GrpcServerMetricsTest, KnownMethodsHaveTheirOwnSeriesFromTheStart) {
  const std::string text = Text(registry_);
  EXPECT_NE(
      text.find("grpc_server_started_total{grpc_method=\"Authenticate\","
                "grpc_service=\"iotauth.identity.v1.IdentityService\",grpc_type=\"unary\"} 0"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("grpc_service=\"grpc.health.v1.Health\""), std::string::npos);

  GrpcServerMetrics::Method* m =
      metrics_.Lookup("/iotauth.identity.v1.IdentityService/Authenticate", "unary");
  EXPECT_EQ(m->service, "iotauth.identity.v1.IdentityService");
  EXPECT_EQ(m->name, "Authenticate");
  EXPECT_EQ(m, metrics_.Lookup("/iotauth.identity.v1.IdentityService/Authenticate", "unary"));
  metrics_.RecordHandled(m, 7, 0.001);
  EXPECT_NE(Text(registry_).find("grpc_code=\"PERMISSION_DENIED\",grpc_method=\"Authenticate\""),
            std::string::npos);
}

TEST_F(GrpcServerMetricsTest, MadeUpMethodNamesShareOneBoundedSeries) {
  const int before = Series(registry_, "grpc_server_started_total");
  GrpcServerMetrics::Method* first = nullptr;
  for (int i = 0; i < 1000; ++i) {
    GrpcServerMetrics::Method* m =
        metrics_.Lookup(absl::StrCat("/evil.Svc", i, "/secret-token-", i), "bidi_stream");
    EXPECT_EQ(m->service, GrpcServerMetrics::kUnknown);
    EXPECT_EQ(m->name, GrpcServerMetrics::kUnknown);
    if (first == nullptr) first = m;
    EXPECT_EQ(m, first);
    m->started->Increment();
    metrics_.RecordHandled(m, 12, 0.0001);  // UNIMPLEMENTED
  }
  // A method outside every registered service, with a known service's prefix, too.
  EXPECT_EQ(metrics_.Lookup("/iotauth.identity.v1.IdentityService/Nope", "bidi_stream"), first);
  // One new series for the unknown label set, whatever the names were.
  EXPECT_EQ(Series(registry_, "grpc_server_started_total"), before + 1);
  const std::string text = Text(registry_);
  EXPECT_EQ(text.find("evil"), std::string::npos);
  EXPECT_EQ(text.find("secret-token"), std::string::npos);
  EXPECT_EQ(text.find("Nope"), std::string::npos);
  EXPECT_NE(text.find("grpc_server_handled_total{grpc_code=\"UNIMPLEMENTED\","
                      "grpc_method=\"unknown\",grpc_service=\"unknown\","
                      "grpc_type=\"bidi_stream\"} 1000"),
            std::string::npos)
      << text;
}

TEST_F(GrpcServerMetricsTest, MeterInHandlerAfterRegistrationKeepsTheMethodsName) {
  GrpcServerMetrics::Method* m =
      metrics_.MeterInHandler("/iotauth.identity.v1.IdentityService/Authorize", "unary");
  EXPECT_EQ(m->name, "Authorize");
  EXPECT_TRUE(metrics_.IsMeteredInHandler("/iotauth.identity.v1.IdentityService/Authorize"));
  // A service hosted outside the descriptor pool that meters itself is still known.
  GrpcServerMetrics::Method* own = metrics_.MeterInHandler("/custom.v1.Own/Call", "unary");
  EXPECT_EQ(own->service, "custom.v1.Own");
  EXPECT_EQ(metrics_.Lookup("/custom.v1.Own/Call", "unary"), own);
}

TEST(GrpcServerMetricsUnsealed, BeforeRegistrationMethodsAreNamedAsCalled) {
  prometheus::Registry registry;
  GrpcServerMetrics metrics(registry);
  GrpcServerMetrics::Method* m = metrics.Lookup("/pkg.Svc/Method", "unary");
  EXPECT_EQ(m->service, "pkg.Svc");
  EXPECT_EQ(m->name, "Method");
}

}  // namespace
}  // namespace iotauth
