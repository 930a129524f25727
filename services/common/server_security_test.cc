#include "services/common/server_security.h"

#include "gtest/gtest.h"
#include "services/common/crypto.h"

namespace iotauth {
namespace {

iotauth::config::v1::AuthConfig Auth() {
  iotauth::config::v1::AuthConfig a;
  a.set_roles_from_ou(true);
  auto* t = a.add_bearer_tokens();
  t->set_name("ci-reader");
  t->set_sha256(crypto::Sha256Hex("s3cret-token"));
  t->add_roles("reader");
  auto* b = a.add_cert_roles();
  b->set_subject_cn("broker-1");
  b->add_roles("gateway");
  return a;
}

TEST(Rfc2253Test, ParsesEscapes) {
  auto parts = ParseRfc2253("CN=a\\,b,OU=admin+OU=reader,O=x");
  ASSERT_EQ(parts.size(), 4u);
  EXPECT_EQ(parts[0], (std::pair<std::string, std::string>{"CN", "a,b"}));
  EXPECT_EQ(parts[2].second, "reader");
}

TEST(CallerResolverTest, RolesFromOu) {
  ConfiguredCallerResolver r(Auth());
  Caller c = r.ResolveFrom("", "CN=iotauth-admin,OU=admin,O=iotauth development");
  EXPECT_TRUE(c.authenticated);
  EXPECT_EQ(c.principal, "iotauth-admin");
  EXPECT_TRUE(c.Has(Role::kAdmin));
  EXPECT_TRUE(c.Has(Role::kGateway));  // admin implies every role
}

TEST(CallerResolverTest, CnBinding) {
  ConfiguredCallerResolver r(Auth());
  Caller c = r.ResolveFrom("", "CN=broker-1,O=acme");
  EXPECT_TRUE(c.Has(Role::kGateway));
  EXPECT_FALSE(c.Has(Role::kReader));
  EXPECT_TRUE(RequireRole(c, Role::kGateway).ok());
  EXPECT_EQ(RequireRole(c, Role::kAdmin).code(), absl::StatusCode::kPermissionDenied);
}

TEST(CallerResolverTest, CertWithoutRolesIsAuthenticatedButPowerless) {
  ConfiguredCallerResolver r(Auth());
  Caller c = r.ResolveFrom("", "CN=someone,O=acme");
  EXPECT_TRUE(c.authenticated);
  EXPECT_EQ(RequireRole(c, Role::kReader).code(), absl::StatusCode::kPermissionDenied);
}

TEST(CallerResolverTest, BearerTokens) {
  ConfiguredCallerResolver r(Auth());
  Caller ok = r.ResolveFrom("s3cret-token", "");
  EXPECT_EQ(ok.principal, "ci-reader");
  EXPECT_TRUE(ok.Has(Role::kReader));
  Caller bad = r.ResolveFrom("wrong", "CN=iotauth-admin,OU=admin");
  EXPECT_FALSE(bad.authenticated);
  EXPECT_EQ(RequireRole(bad, Role::kReader).code(), absl::StatusCode::kUnauthenticated);
}

TEST(CallerResolverTest, OnlyTheInternalTokenIsInternal) {
  ConfiguredCallerResolver r(Auth());
  r.AddInternalToken(std::string(kInternalPrincipal), "in-process-token",
                     static_cast<uint32_t>(Role::kAdmin));
  Caller in = r.ResolveFrom("in-process-token", "");
  EXPECT_TRUE(in.internal);
  EXPECT_EQ(in.principal, kInternalPrincipal);
  // The same name from a certificate, or any configured token: not internal.
  EXPECT_FALSE(r.ResolveFrom("", "CN=iotauth-internal,OU=admin").internal);
  EXPECT_TRUE(r.ResolveFrom("", "CN=iotauth-internal,OU=admin").Has(Role::kAdmin));
  EXPECT_FALSE(r.ResolveFrom("s3cret-token", "").internal);
}

TEST(CallerResolverTest, NothingPresented) {
  ConfiguredCallerResolver r(Auth());
  EXPECT_EQ(RequireRole(r.ResolveFrom("", ""), Role::kGateway).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(CallerResolverTest, OuRolesCanBeTurnedOff) {
  auto a = Auth();
  a.set_roles_from_ou(false);
  ConfiguredCallerResolver r(a);
  EXPECT_FALSE(r.ResolveFrom("", "CN=x,OU=admin").Has(Role::kAdmin));
}

}  // namespace
}  // namespace iotauth
