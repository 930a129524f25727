#include "services/common/auth_gate.h"

#include <string>

#include "gtest/gtest.h"
#include "proto/iotauth/config/v1/config.pb.h"
#include "services/common/crypto.h"

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

}  // namespace
}  // namespace iotauth
