#include "clients/mosquitto/grpc_auth_client.h"

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/test_server_pki.h"

namespace iotauth::mosquitto {
namespace {

using test_pki::PkiA;
using test_pki::PkiB;

std::string WriteFile(const std::string& name, const std::string& content) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  return path;
}

// Mutual TLS to a port nothing listens on, with pki A's files.
PluginConfig Config() {
  PluginConfig c;
  c.address = "127.0.0.1:1";
  c.ca_file = WriteFile("ca.pem", PkiA().ca);
  c.cert_file = WriteFile("cert.pem", PkiA().cert);
  c.key_file = WriteFile("key.pem", PkiA().key);
  return c;
}

absl::Status Call(GrpcAuthClient& client) {
  return client.Authenticate(identity::v1::AuthenticateRequest(), absl::Seconds(5)).status();
}

TEST(GrpcAuthClientTest, AMismatchedPairIsRefusedAtLoad) {
  ASSERT_FALSE(PkiA().key.empty());
  ASSERT_TRUE(GrpcAuthClient::Create(Config()).ok());
  PluginConfig c = Config();
  c.key_file = WriteFile("other-key.pem", PkiB().key);
  const absl::Status s = GrpcAuthClient::Create(c).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "plugin_opt_key_file")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "does not belong to the certificate")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), PkiB().key.substr(40, 30))) << "never the key";

  c = Config();
  c.ca_file = WriteFile("not-a-ca.pem", "not PEM");
  EXPECT_EQ(GrpcAuthClient::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GrpcAuthClientTest, AnUnreachableServerWithGoodFilesIsOnlyUnavailable) {
  auto client = GrpcAuthClient::Create(Config());
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Status s = Call(**client);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "TLS files")) << s;
}

// A renewal that wrote another pair's key breaks every new connection: the error
// then says so (checked again at most every 10 s).
TEST(GrpcAuthClientTest, ARenewalThatBrokeThePairIsNamedWhenIotauthIsUnreachable) {
  const PluginConfig c = Config();
  auto client = GrpcAuthClient::Create(c);
  ASSERT_TRUE(client.ok()) << client.status();
  WriteFile("key.pem", PkiB().key);
  const absl::Status s = Call(**client);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "the TLS files fail their check now")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "does not belong to the certificate")) << s;
  const absl::Status again = Call(**client);
  EXPECT_EQ(again.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(absl::StrContains(again.message(), "TLS files")) << "checked < 10 s ago";
}

}  // namespace
}  // namespace iotauth::mosquitto
