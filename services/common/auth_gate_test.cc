#include "services/common/auth_gate.h"

#include <string>

#include "gtest/gtest.h"
#include "proto/iotauth/config/v1/config.pb.h"
#include "services/common/clock.h"
#include "services/common/crypto.h"
#include "services/common/refused_calls.h"

namespace iotauth {
namespace {

ConfiguredCallerResolver Resolver() {
  iotauth::config::v1::AuthConfig a;
  a.set_roles_from_ou(true);
  auto* t = a.add_bearer_tokens();
  t->set_name("ci-reader");
  t->set_sha256(crypto::Sha256Hex("s3cret-token"));
  t->add_roles("reader");
  return ConfiguredCallerResolver(a);
}

// Each row changes one thing; the gate admits exactly the calls a handler's
// RequireRole would not refuse as unauthenticated.
TEST(EarlyAuthGateTest, AdmitsWhatTheResolverAuthenticates) {
  const ConfiguredCallerResolver resolver = Resolver();
  const EarlyAuthGate gate(&resolver);
  const absl::string_view good = "Bearer s3cret-token";
  const absl::string_view lower = "bearer s3cret-token";
  const absl::string_view wrong = "Bearer guess";
  const absl::string_view basic = "Basic czNjcmV0LXRva2Vu";
  const absl::string_view empty = "Bearer ";
  const std::string cert = "CN=broker-1,OU=gateway,O=acme";
  const std::string authenticate = "/iotauth.identity.v1.IdentityService/Authenticate";
  struct Row {
    const char* name;
    std::string path;
    const absl::string_view* authorization;
    std::string subject;
    bool admitted;
  } rows[] = {
      {"nothing", authenticate, nullptr, "", false},
      {"valid token", authenticate, &good, "", true},
      {"scheme in lower case", authenticate, &lower, "", true},
      {"wrong token", authenticate, &wrong, "", false},
      {"another scheme", authenticate, &basic, "", false},
      {"verified certificate", authenticate, nullptr, cert, true},
      // A wrong token is not downgraded to the certificate (as in Resolve); an
      // empty one leaves the certificate to speak.
      {"wrong token beside a certificate", authenticate, &wrong, cert, false},
      {"empty token beside a certificate", authenticate, &empty, cert, true},
      {"empty token alone", authenticate, &empty, "", false},
      {"health without anything", "/grpc.health.v1.Health/Check", nullptr, "", true},
      {"reflection without anything",
       "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", nullptr, "", true},
      {"a path that only looks public", "/grpc.healthy/Check", nullptr, "", false},
      {"registry without anything", "/iotauth.registry.v1.DeviceRegistry/CreateTenant", nullptr, "",
       false},
      {"no path at all", "", nullptr, "", false},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(gate.Admits(row.path, row.authorization, row.subject), row.admitted) << row.name;
  }
}

TEST(EarlyAuthGateTest, ProcessRefusesWithTheHandlersWordsAndCounts) {
  const ConfiguredCallerResolver resolver = Resolver();
  EarlyAuthGate gate(&resolver);
  const std::string path_key = ":path";
  const std::string path = "/iotauth.registry.v1.DeviceRegistry/CreateTenant";
  const std::string auth_key = "authorization";
  const std::string token = "Bearer s3cret-token";
  grpc::AuthMetadataProcessor::InputMetadata md;
  md.insert({grpc::string_ref(path_key), grpc::string_ref(path)});
  grpc::AuthMetadataProcessor::OutputMetadata consumed;
  grpc::AuthMetadataProcessor::OutputMetadata response;
  grpc::Status refused = gate.Process(md, nullptr, &consumed, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(refused.error_message(),
            "no caller credential: present a client certificate or a bearer token");
  EXPECT_EQ(gate.refused(), 1u);
  md.insert({grpc::string_ref(auth_key), grpc::string_ref(token)});
  EXPECT_TRUE(gate.Process(md, nullptr, &consumed, &response).ok());
  EXPECT_TRUE(consumed.empty());  // the handler still sees the token
  EXPECT_EQ(gate.refused(), 1u);
}

grpc::Status ProcessPath(EarlyAuthGate& gate, const std::string& path,
                         const std::string* authorization = nullptr) {
  const std::string path_key = ":path";
  const std::string auth_key = "authorization";
  grpc::AuthMetadataProcessor::InputMetadata md;
  md.insert({grpc::string_ref(path_key), grpc::string_ref(path)});
  if (authorization != nullptr) {
    md.insert({grpc::string_ref(auth_key), grpc::string_ref(*authorization)});
  }
  grpc::AuthMetadataProcessor::OutputMetadata consumed;
  grpc::AuthMetadataProcessor::OutputMetadata response;
  return gate.Process(md, nullptr, &consumed, &response);
}

TEST(EarlyAuthGateTest, RefusalsAreTalliedWithWhatTheCallPresented) {
  const ConfiguredCallerResolver resolver = Resolver();
  FakeClock clock;
  EarlyAuthGate gate(&resolver, {"/grpc.health.v1.Health/"}, {}, &clock);
  const std::string create = "/iotauth.registry.v1.DeviceRegistry/CreateTenant";
  const std::string good = "Bearer s3cret-token";
  const std::string wrong = "Bearer planted-wrong-token";
  const std::string basic = "Basic dXNlcjpwYXNz";
  EXPECT_FALSE(ProcessPath(gate, create).ok());
  EXPECT_FALSE(ProcessPath(gate, create).ok());
  clock.Advance(absl::Seconds(1));
  EXPECT_FALSE(ProcessPath(gate, create, &wrong).ok());
  EXPECT_FALSE(ProcessPath(gate, create, &basic).ok());
  // Admitted calls, health calls and shed calls are not refusals.
  EXPECT_TRUE(ProcessPath(gate, create, &good).ok());
  EXPECT_TRUE(ProcessPath(gate, "/grpc.health.v1.Health/Check").ok());
  RefusedCallTally::Drained d = gate.refusals()->Drain();
  ASSERT_EQ(d.entries.size(), 3u);
  EXPECT_EQ(d.entries[0].method, create);
  EXPECT_EQ(d.entries[0].presented, RefusedCallTally::Presented::kNothing);
  EXPECT_EQ(d.entries[0].count, 2u);
  EXPECT_EQ(d.entries[1].presented, RefusedCallTally::Presented::kUnknownToken);
  EXPECT_EQ(d.entries[1].token_fingerprint, RefusedCallTally::Fingerprint("planted-wrong-token"));
  EXPECT_EQ(d.entries[1].first, clock.Now());
  EXPECT_EQ(d.entries[2].presented, RefusedCallTally::Presented::kMalformedAuthorization);
  EXPECT_EQ(d.entries[2].token_fingerprint, "");
  EXPECT_EQ(gate.refused(), 4u);
}

TEST(EarlyAuthGateTest, PublicCallsWithoutACredentialShareABudget) {
  const ConfiguredCallerResolver resolver = Resolver();
  FakeClock clock;
  EarlyAuthGate gate(&resolver, {"/grpc.health.v1.Health/", "/grpc.reflection."},
                     {.per_second = 10, .burst = 3}, &clock);
  const std::string check = "/grpc.health.v1.Health/Check";
  const std::string reflect = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
  // The burst, shared by health and reflection.
  EXPECT_TRUE(ProcessPath(gate, check).ok());
  EXPECT_TRUE(ProcessPath(gate, reflect).ok());
  EXPECT_TRUE(ProcessPath(gate, check).ok());
  const grpc::Status shed = ProcessPath(gate, check);
  EXPECT_EQ(shed.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(shed.error_message(),
            "too many health or reflection calls without a credential: slow down, or present "
            "a client certificate or a bearer token");
  EXPECT_EQ(ProcessPath(gate, reflect).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(gate.shed(), 2u);
  EXPECT_EQ(gate.refused(), 0u);
  // A credential skips the budget; a wrong token does not.
  const std::string good = "Bearer s3cret-token";
  const std::string wrong = "Bearer guess";
  EXPECT_TRUE(ProcessPath(gate, check, &good).ok());
  EXPECT_EQ(ProcessPath(gate, check, &wrong).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // 10 a second: one more after 100 ms, and never more than the burst.
  clock.Advance(absl::Milliseconds(100));
  EXPECT_TRUE(ProcessPath(gate, check).ok());
  EXPECT_FALSE(ProcessPath(gate, check).ok());
  clock.Advance(absl::Hours(1));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(ProcessPath(gate, check).ok()) << i;
  EXPECT_FALSE(ProcessPath(gate, check).ok());
  // A clock set back refills nothing, and does not stop the refill after it.
  clock.Advance(-absl::Minutes(5));
  EXPECT_FALSE(ProcessPath(gate, check).ok());
  clock.Advance(absl::Milliseconds(100));
  EXPECT_TRUE(ProcessPath(gate, check).ok());
  // Other methods are not on the budget: without a credential they are refused
  // UNAUTHENTICATED, as before.
  EXPECT_EQ(ProcessPath(gate, "/iotauth.registry.v1.DeviceRegistry/ListTenants").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST(EarlyAuthGateTest, ACallerWithTooManyUnsettledCallsIsRefused) {
  const ConfiguredCallerResolver resolver = Resolver();
  FakeClock clock;
  EarlyAuthGate gate(&resolver, {"/grpc.health.v1.Health/"}, {}, &clock,
                     {.max_waiting = 2, .forgiven_per_second = 0});
  const std::string path = "/iotauth.identity.v1.IdentityService/Authenticate";
  const std::string token = "Bearer s3cret-token";
  EXPECT_TRUE(ProcessPath(gate, path, &token).ok());
  EXPECT_TRUE(ProcessPath(gate, path, &token).ok());
  const grpc::Status refused = ProcessPath(gate, path, &token);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(refused.error_message(),
            "too many of this caller's calls are waiting, or were reset before the server "
            "started them: slow down");
  EXPECT_EQ(gate.backlog_refused(), 1u);
  // Health with the same credential is on the same count.
  EXPECT_EQ(ProcessPath(gate, "/grpc.health.v1.Health/Check", &token).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A call that reaches its handler settles one.
  gate.backlog()->Started(CallBacklog::KeyOf(token, ""));
  EXPECT_TRUE(ProcessPath(gate, path, &token).ok());
  // Unauthenticated calls are refused as before, not counted here.
  EXPECT_EQ(ProcessPath(gate, path).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(gate.backlog_refused(), 2u);
}

}  // namespace
}  // namespace iotauth
