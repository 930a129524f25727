#include "services/common/server_security.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/server_builder.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/common/crypto.h"
#include "services/common/dev_pki.h"
#include "services/common/error_info.h"

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

// Non-ASCII bytes arrive as RFC 4514 hexpairs: decoded, so that a CN binding for
// "Zoë" matches, and one for the literal "ZoC3AB" does not.
TEST(Rfc2253Test, DecodesHexPairs) {
  auto parts = ParseRfc2253("CN=Zo\\C3\\AB,OU=reader");
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].second, "Zo\xc3\xab");
  EXPECT_EQ(ParseRfc2253("CN=a\\2cb")[0].second, "a,b");
  EXPECT_EQ(ParseRfc2253("CN=a\\zb")[0].second, "azb");  // not a hexpair: the character
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
  const absl::Status denied = RequireRole(c, Role::kAdmin);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  // The caller can tell which role was missing without parsing the message.
  EXPECT_EQ(ErrorReason(denied), "ROLE_REQUIRED");
  EXPECT_EQ(ErrorMetadata(denied, "role"), "admin");
  EXPECT_EQ(ErrorMetadata(denied, "other"), "");
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
  const absl::Status none = RequireRole(r.ResolveFrom("", ""), Role::kGateway);
  EXPECT_EQ(none.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorReason(none), "NO_CALLER_CREDENTIAL");
}

TEST(CallerResolverTest, OuRolesCanBeTurnedOff) {
  auto a = Auth();
  a.set_roles_from_ou(false);
  ConfiguredCallerResolver r(a);
  EXPECT_FALSE(r.ResolveFrom("", "CN=x,OU=admin").Has(Role::kAdmin));
}

// The listener over mTLS and the upstream client credentials, both over reloaded
// files: the client presents its certificate, and the server's name is checked.
class TlsCredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/server-security-tls");
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    ASSERT_TRUE(EnsureDevPki(dir_ + "/pki", absl::Now()).ok());
    pki_ = DevPkiLayout(dir_ + "/pki");
    config_.set_data_dir(dir_);
    auto* tls = config_.mutable_grpc()->mutable_tls();
    tls->set_mode(iotauth::config::v1::TLS_MODE_MTLS);
    tls->set_cert_file(pki_.server_cert);
    tls->set_key_file(pki_.server_key);
    tls->set_client_ca_file(pki_.ca_cert);
    absl::StatusOr<ServerTls> server_tls = BuildServerCredentials(config_);
    ASSERT_TRUE(server_tls.ok()) << server_tls.status();
    server_tls_ = *server_tls;
    ASSERT_NE(server_tls_.reloader, nullptr);
    grpc::ServerBuilder builder;
    builder.RegisterCallbackGenericService(&generic_);
    builder.AddListeningPort("localhost:0", server_tls_.credentials, &port_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  std::shared_ptr<TlsReloader> Client(const TlsSourcePaths& paths) {
    TlsReloader::Options o;
    o.staging_root = TlsStagingRoot(config_);
    o.use = "upstream";
    o.poll_thread = false;
    absl::StatusOr<std::shared_ptr<TlsReloader>> r = TlsReloader::Start(paths, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : nullptr;
  }

  bool Connects(const TlsReloader& client, const std::string& server_name = "") const {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (!server_name.empty()) args.SetSslTargetNameOverride(server_name);
    auto channel = grpc::CreateCustomChannel(absl::StrCat("localhost:", port_),
                                             ChannelCredentialsFrom(client), args);
    return channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(3)));
  }

  std::string dir_;
  DevPkiPaths pki_;
  iotauth::config::v1::ServerConfig config_;
  ServerTls server_tls_;
  grpc::CallbackGenericService generic_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(TlsCredentialsTest, TheClientPresentsItsCertificateAndChecksTheName) {
  std::shared_ptr<TlsReloader> admin = Client({pki_.admin_cert, pki_.admin_key, pki_.ca_cert});
  ASSERT_NE(admin, nullptr);
  EXPECT_TRUE(admin->has_identity());
  EXPECT_TRUE(Connects(*admin));
  EXPECT_TRUE(Connects(*admin, "localhost"));
  // A certificate for another name is refused, as grpc::SslCredentials would.
  EXPECT_FALSE(Connects(*admin, "registry.example.net"));
  // mTLS: a client with no certificate of its own does not get in.
  std::shared_ptr<TlsReloader> anonymous = Client({"", "", pki_.ca_cert});
  ASSERT_NE(anonymous, nullptr);
  EXPECT_FALSE(anonymous->has_identity());
  EXPECT_FALSE(Connects(*anonymous));
  // Only a CA: no expiry to report.
  for (const auto& family : anonymous->Collect()) {
    EXPECT_NE(family.name, "iotauth_tls_certificate_expiry_timestamp_seconds");
  }
}

TEST_F(TlsCredentialsTest, ACertificateWithoutItsKeyIsAConfigurationError) {
  TlsReloader::Options o;
  o.staging_root = TlsStagingRoot(config_);
  o.poll_thread = false;
  absl::StatusOr<std::shared_ptr<TlsReloader>> r =
      TlsReloader::Start({pki_.admin_cert, "", pki_.ca_cert}, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("needs its key file"), absl::string_view::npos);
}

}  // namespace
}  // namespace iotauth
