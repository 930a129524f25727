#include "services/common/log.h"

#include <string>
#include <vector>

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

// Whatever bytes a field holds, the line is valid JSON: well-formed UTF-8 is kept,
// anything else becomes U+FFFD one byte at a time.
TEST(LogTest, InvalidUtf8BecomesReplacementCharacters) {
  struct Row {
    const char* name;
    std::string in;
    std::string out;
  } rows[] = {
      {"two, three and four bytes", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
       "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
      {"a lone continuation byte",
       "a\x80"
       "b",
       R"(a\ufffdb)"},
      {"a lead byte at the end", "a\xc3", R"(a\ufffd)"},
      {"a cut three-byte character", "\xe2\x82x", R"(\ufffd\ufffdx)"},
      {"an overlong slash", "\xc0\xaf", R"(\ufffd\ufffd)"},
      {"an overlong three-byte form", "\xe0\x80\xaf", R"(\ufffd\ufffd\ufffd)"},
      {"a surrogate", "\xed\xa0\x80", R"(\ufffd\ufffd\ufffd)"},
      {"above U+10FFFF", "\xf4\x90\x80\x80", R"(\ufffd\ufffd\ufffd\ufffd)"},
      {"0xff", "\xff", R"(\ufffd)"},
  };
  for (const Row& row : rows) EXPECT_EQ(JsonEscape(row.in), row.out) << row.name;
}

TEST(LogTest, ParsesLevels) {
  Level l;
  EXPECT_TRUE(ParseLevel("debug", &l));
  EXPECT_EQ(l, Level::kDebug);
  EXPECT_FALSE(ParseLevel("verbose", &l));
}

std::vector<std::pair<Level, std::string>>* captured = nullptr;

TEST(LogTest, ASinkGetsEachWholeLineInsteadOfStderr) {
  std::vector<std::pair<Level, std::string>> lines;
  captured = &lines;
  SetSink([](Level level, absl::string_view line) { captured->emplace_back(level, line); });
  Warn("tls: refused", {{"use", "mosquitto_plugin"}});
  Debug("not at the default level");
  SetSink(nullptr);
  Error("to stderr again");
  captured = nullptr;
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].first, Level::kWarn);
  EXPECT_NE(lines[0].second.find(R"("msg":"tls: refused","use":"mosquitto_plugin"})"),
            std::string::npos)
      << lines[0].second;
  EXPECT_EQ(lines[0].second.back(), '}') << "no newline";
}

}  // namespace
}  // namespace iotauth::log
