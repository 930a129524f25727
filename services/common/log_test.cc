#include "services/common/log.h"

#include "gtest/gtest.h"

namespace iotauth::log {
namespace {

TEST(LogTest, FormatsOneJsonObject) {
  std::string line = FormatLine(absl::FromUnixMillis(1700000000123), Level::kWarn, "hello \"x\"",
                                {{"addr", "127.0.0.1:1"}, {"ctl", "a\nb\x01"}});
  EXPECT_EQ(line,
            "{\"ts\":\"2023-11-14T22:13:20.123Z\",\"level\":\"warn\",\"msg\":\"hello "
            "\\\"x\\\"\",\"addr\":\"127.0.0.1:1\",\"ctl\":\"a\\nb\\u0001\"}");
}

TEST(LogTest, ParsesLevels) {
  Level l;
  EXPECT_TRUE(ParseLevel("debug", &l));
  EXPECT_EQ(l, Level::kDebug);
  EXPECT_FALSE(ParseLevel("verbose", &l));
}

}  // namespace
}  // namespace iotauth::log
