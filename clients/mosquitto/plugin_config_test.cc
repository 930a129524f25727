#include "clients/mosquitto/plugin_config.h"

#include <unistd.h>

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace iotauth::mosquitto {
namespace {

using Opts = std::vector<std::pair<std::string, std::string>>;

TEST(PluginConfigTest, Defaults) {
  auto c = ParsePluginOptions({{"address", "localhost:8443"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->address, "localhost:8443");
  EXPECT_EQ(c->timeout, absl::Seconds(1));
  EXPECT_EQ(c->cache_size, 10000u);
  EXPECT_EQ(c->offline_grant_ttl, absl::Hours(24));
  EXPECT_EQ(c->max_offline_sessions, 100000u);
  EXPECT_EQ(c->tls_staging_dir, "");
  EXPECT_TRUE(
      absl::EndsWith(DefaultTlsStagingDir(), "/iotauth-mosquitto-" + std::to_string(geteuid())))
      << DefaultTlsStagingDir();
}

TEST(PluginConfigTest, AllOptions) {
  auto c = ParsePluginOptions({{"address", "a:1"},
                               {"ca_file", "/ca"},
                               {"cert_file", "/c"},
                               {"key_file", "/k"},
                               {"timeout_ms", "250"},
                               {"cache_size", "0"},
                               {"tenant", "acme"},
                               {"tls_server_name", "iotauth"},
                               {"tls_staging_dir", "/var/lib/mosquitto/iotauth-tls"},
                               {"failure_backoff_ms", "0"},
                               {"offline_grant_ttl_s", "600"},
                               {"max_offline_sessions", "42"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->timeout, absl::Milliseconds(250));
  EXPECT_EQ(c->cache_size, 0u);
  EXPECT_EQ(c->tenant_id, "acme");
  EXPECT_EQ(c->tls_staging_dir, "/var/lib/mosquitto/iotauth-tls");
  EXPECT_EQ(c->failure_backoff, absl::ZeroDuration());
  EXPECT_EQ(c->offline_grant_ttl, absl::Minutes(10));
  EXPECT_EQ(c->max_offline_sessions, 42u);
}

TEST(PluginConfigTest, OfflineOptionsAcceptZero) {
  auto c = ParsePluginOptions(
      {{"address", "a:1"}, {"offline_grant_ttl_s", "0"}, {"max_offline_sessions", "0"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->offline_grant_ttl, absl::ZeroDuration());
  EXPECT_EQ(c->max_offline_sessions, 0u);
}

TEST(PluginConfigTest, Rejects) {
  struct Case {
    Opts opts;
    const char* needle;
  } cases[] = {
      {{}, "plugin_opt_address"},
      {{{"address", "a:1"}, {"timeout_ms", "0"}}, "plugin_opt_timeout_ms"},
      {{{"address", "a:1"}, {"timeout_ms", "abc"}}, "plugin_opt_timeout_ms"},
      {{{"address", "a:1"}, {"timeout_ms", "999999"}}, "plugin_opt_timeout_ms"},
      {{{"address", "a:1"}, {"cache_size", "-1"}}, "plugin_opt_cache_size"},
      {{{"address", "a:1"}, {"offline_grant_ttl_s", "-1"}}, "plugin_opt_offline_grant_ttl_s"},
      {{{"address", "a:1"}, {"offline_grant_ttl_s", "1d"}}, "plugin_opt_offline_grant_ttl_s"},
      {{{"address", "a:1"}, {"offline_grant_ttl_s", ""}}, "plugin_opt_offline_grant_ttl_s"},
      {{{"address", "a:1"}, {"max_offline_sessions", "-5"}}, "plugin_opt_max_offline_sessions"},
      {{{"address", "a:1"}, {"max_offline_sessions", "many"}}, "plugin_opt_max_offline_sessions"},
      {{{"address", "a:1"}, {"colour", "red"}}, "plugin_opt_colour"},
      {{{"address", "a:1"}, {"tls_staging_dir", "relative/dir"}}, "plugin_opt_tls_staging_dir"},
      {{{"address", "a:1"}, {"tls_staging_dir", ""}}, "plugin_opt_tls_staging_dir"},
      {{{"address", "a:1"}, {"ca_file", "/ca"}, {"cert_file", "/c"}}, "key_file"},
      {{{"address", "a:1"}, {"cert_file", "/c"}, {"key_file", "/k"}}, "ca_file"},
  };
  for (const Case& c : cases) {
    auto got = ParsePluginOptions(c.opts);
    ASSERT_FALSE(got.ok()) << c.needle;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(got.status().message().find(c.needle), absl::string_view::npos) << got.status();
  }
}

}  // namespace
}  // namespace iotauth::mosquitto
