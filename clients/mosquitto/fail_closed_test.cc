#include "clients/mosquitto/fail_closed.h"

#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace iotauth::mosquitto {
namespace {

constexpr int kRefused = 11;

TEST(CallFailClosedTest, ABodyThatReturnsIsAnsweredAsItIs) {
  std::vector<std::string> logged;
  EXPECT_EQ(CallFailClosed(
                "connect check", kRefused, [] { return 0; },
                [&](const std::string& line) { logged.push_back(line); }),
            0);
  EXPECT_TRUE(logged.empty());
}

TEST(CallFailClosedTest, AnExceptionIsARefusalWithOneLogLine) {
  std::vector<std::string> logged;
  auto log = [&](const std::string& line) { logged.push_back(line); };
  EXPECT_EQ(CallFailClosed(
                "connect check", kRefused, []() -> int { throw std::bad_alloc(); }, log),
            kRefused);
  EXPECT_EQ(CallFailClosed(
                "acl check", kRefused, []() -> int { throw 42; }, log),
            kRefused);
  ASSERT_EQ(logged.size(), 2u);
  EXPECT_EQ(logged[0], "connect check failed: std::bad_alloc; refused");
  EXPECT_EQ(logged[1], "acl check failed: an unknown exception; refused");
}

TEST(CallFailClosedTest, ALoggerThatThrowsStillRefuses) {
  EXPECT_EQ(CallFailClosed(
                "connect check", kRefused, []() -> int { throw std::runtime_error("x"); },
                [](const std::string&) { throw std::runtime_error("log"); }),
            kRefused);
}

}  // namespace
}  // namespace iotauth::mosquitto
