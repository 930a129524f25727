#include "services/common/config.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/string_view.h"
#include "gtest/gtest.h"

namespace iotauth {
namespace {

std::string WriteTemp(const std::string& name, const std::string& content) {
  std::string path =
      std::string(getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp") + "/" + name;
  std::ofstream(path) << content;
  return path;
}

TEST(ConfigTest, DefaultsAreValid) {
  auto c = LoadConfig({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->grpc().address(), "localhost:50051");
  EXPECT_EQ(c->grpc().tls().mode(), iotauth::config::v1::TLS_MODE_DEV_PKI);
  EXPECT_TRUE(HostsService(*c, "identity"));
}

TEST(ConfigTest, FileThenEnvThenFlags) {
  ConfigSources s;
  s.file =
      WriteTemp("c1.json", R"({"grpc": {"address": "127.0.0.1:1"}, "log": {"level": "warn"}})");
  s.env = {{"IOTAUTH_GRPC__ADDRESS", "127.0.0.1:2"}, {"IOTAUTH_ADDRESS", "ignored"}};
  s.sets = {"identity.clock_skew=2m", "services=identity,registry", "audit.disabled=true"};
  auto c = LoadConfig(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->grpc().address(), "127.0.0.1:2");
  EXPECT_EQ(c->log().level(), "warn");
  EXPECT_EQ(c->identity().clock_skew().seconds(), 120);
  EXPECT_EQ(c->services_size(), 2);
}

TEST(ConfigTest, AuditSpoolSitsBesideTheStoreOrPerRole) {
  ConfigSources s;
  s.sets = {"data_dir=/var/lib/iotauth"};
  auto c = LoadConfig(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(AuditSpoolPath(*c), "/var/lib/iotauth/audit.spool");
  s.sets = {"data_dir=/d", "storage.audit_log_dir=/logs/audit/"};
  c = LoadConfig(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(AuditSpoolPath(*c), "/d/audit.spool");  // not beside a log that may be a mount
  s.sets = {"data_dir=/d", "services=identity", "registry_address=localhost:1",
            "audit.remote_address=localhost:2"};
  c = LoadConfig(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(AuditSpoolPath(*c), "/d/audit-remote.identity.spool");
  s.sets = {"data_dir=/d", "services=registry,identity", "audit.remote_address=localhost:2"};
  c = LoadConfig(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(AuditSpoolPath(*c), "/d/audit-remote.identity+registry.spool");  // sorted
}

TEST(ConfigTest, ExplicitFalseInFileOverridesDefault) {
  ConfigSources s;
  s.file = WriteTemp("c2.json", R"({"auth": {"rolesFromOu": false}})");
  auto c = LoadConfig(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->auth().roles_from_ou());
  EXPECT_TRUE(DefaultConfig().auth().roles_from_ou());
}

TEST(ConfigTest, AnUnwritableAuditLogTakesTheProcessOutOfRotationUnlessSet) {
  EXPECT_EQ(DefaultConfig().audit().when_unwritable(), "not_serving");
  for (const char* policy : {"refuse", "serve", "not_serving"}) {
    ConfigSources s;
    s.env = {{"IOTAUTH_AUDIT__WHEN_UNWRITABLE", policy}};
    auto c = LoadConfig(s);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->audit().when_unwritable(), policy);
  }
  ConfigSources bad;
  bad.sets = {"audit.when_unwritable=true"};
  auto c = LoadConfig(bad);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(
                "'audit.when_unwritable': invalid value 'true' (not_serving, refuse or serve)"),
            absl::string_view::npos)
      << c.status();
  // The old boolean is gone, and says so rather than being ignored.
  ConfigSources old;
  old.sets = {"audit.serve_when_unwritable=true"};
  EXPECT_FALSE(LoadConfig(old).ok());
}

TEST(ConfigTest, RetentionBySizeNeedsTheSegmentLog) {
  ConfigSources s;
  s.sets = {"audit.retention_max_bytes=1073741824"};
  auto c = LoadConfig(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->audit().retention_max_bytes(), int64_t{1} << 30);
  s.sets.emplace_back("storage.audit_backend=sqlite");
  EXPECT_NE(LoadConfig(s).status().message().find("needs storage.audit_backend=log"),
            std::string::npos);
  s.sets = {"audit.retention_max_bytes=-1"};
  EXPECT_EQ(LoadConfig(s).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConfigTest, PublicCallBudgetDefaultsAndOverrides) {
  EXPECT_EQ(DefaultConfig().auth().public_calls_per_second(), 1000);
  EXPECT_EQ(DefaultConfig().auth().public_calls_burst(), 2000);
  ConfigSources s;
  s.sets = {"auth.public_calls_per_second=20", "auth.public_calls_burst=40"};
  auto c = LoadConfig(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->auth().public_calls_per_second(), 20);
  EXPECT_EQ(c->auth().public_calls_burst(), 40);
}

TEST(ConfigTest, ShortEnumNames) {
  ConfigSources s;
  s.sets = {"grpc.tls.mode=insecure"};
  auto c = LoadConfig(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->grpc().tls().mode(), iotauth::config::v1::TLS_MODE_INSECURE);
}

struct BadCase {
  std::string file_json;
  std::string set;
  std::string expect_in_message;
};

class ConfigRejects : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigRejects, NamesTheProblem) {
  ConfigSources s;
  if (!GetParam().file_json.empty()) s.file = WriteTemp("bad.json", GetParam().file_json);
  if (!GetParam().set.empty()) s.sets = {GetParam().set};
  auto c = LoadConfig(s);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(GetParam().expect_in_message), std::string::npos)
      << c.status();
}

INSTANTIATE_TEST_SUITE_P(
    All, ConfigRejects,
    ::testing::Values(
        BadCase{R"({"grpc": {"adress": "x:1"}})", "", "adress"},
        BadCase{R"({"grpc": {"address": 5}})", "", "address"},
        BadCase{"", "grpc.adress=x:1", "grpc.adress"},
        BadCase{"", "grpc.address=nohostport", "grpc.address"},
        BadCase{"", "log.level=loud", "log.level"},
        BadCase{"", "identity.clock_skew=forever", "identity.clock_skew"},
        BadCase{"", "identity.clock_skew=2h", "identity.clock_skew"},
        BadCase{"", "grpc.tls.mode=bogus", "grpc.tls.mode"},
        BadCase{"", "audit.full_queue_policy=maybe", "audit.full_queue_policy"},
        BadCase{"", "audit.batch_linger=5s", "audit.batch_linger"},
        BadCase{"", "audit.retention_max_events=-1", "audit.retention_max_events"},
        BadCase{"", "audit.retention_interval=0s", "audit.retention_interval"},
        BadCase{"", "audit.writer_yield_every=-3", "audit.writer_yield_every"},
        BadCase{"", "storage.audit_backend=postgres", "storage.audit_backend"},
        BadCase{"", "storage.audit_segment_events=1000", "storage.audit_segment_events"},
        BadCase{"", "identity.x509_result_cache_size=-1", "identity.x509_result_cache_size"},
        BadCase{"", "identity.replay_cache_size=0", "identity.replay_cache_size"},
        BadCase{"", "identity.exhook_max_sessions=0", "identity.exhook_max_sessions"},
        BadCase{"", "identity.max_enrollment_groups_tried=0",
                "identity.max_enrollment_groups_tried"},
        BadCase{"", "identity.device_max_failures=-1", "identity.device_max_failures"},
        BadCase{"", "identity.source_max_failures=2000000", "identity.source_max_failures"},
        BadCase{"", "identity.lockout_base=0s", "identity.lockout_base"},
        BadCase{"", "identity.lockout_max=10s", "identity.lockout_max"},
        BadCase{"", "identity.failure_memory=0s", "identity.failure_memory"},
        BadCase{"", "identity.limiter_size=0", "identity.limiter_size"},
        BadCase{"", "auth.public_calls_per_second=0", "auth.public_calls_per_second"},
        BadCase{"", "auth.public_calls_burst=-5", "auth.public_calls_burst"},
        BadCase{"", "services=identity,billing", "billing"},
        BadCase{"", "services=identity", "registry_address"},
        BadCase{"", "services=registry", "audit.remote_address"},
        BadCase{"", "audit.disabled=true", "audit.disabled"},
        BadCase{"", "grpc.tls.mode=mtls", "grpc.tls.cert_file"},
        BadCase{
            R"({"auth": {"bearerTokens": [{"name": "a", "sha256": "xyz", "roles": ["admin"]}]}})",
            "", "sha256"},
        BadCase{R"({"auth": {"certRoles": [{"subjectCn": "a", "roles": ["root"]}]}})", "", "root"},
        BadCase{
            R"({"auth": {"bearerTokens": [{"name": "iotauth-internal", "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "roles": ["admin"]}]}})",
            "", "reserved"},
        BadCase{
            R"({"auth": {"certRoles": [{"subjectCn": "iotauth-internal", "roles": ["admin"]}]}})",
            "", "reserved"},
        BadCase{"{not json", "", "config file"}));

TEST(ConfigTest, MissingFileNamesIt) {
  ConfigSources s;
  s.file = "/nonexistent/iotauth.json";
  auto c = LoadConfig(s);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/nonexistent/iotauth.json"), std::string::npos);
}

TEST(ConfigTest, UnreadableCertificateNamesIt) {
  ConfigSources s;
  std::string junk = WriteTemp("junk.pem", "not a certificate");
  s.sets = {"grpc.tls.mode=tls", "grpc.tls.cert_file=" + junk, "grpc.tls.key_file=" + junk};
  auto c = LoadConfig(s);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("grpc.tls.cert_file"), std::string::npos) << c.status();
}

}  // namespace
}  // namespace iotauth
