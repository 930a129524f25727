#include "services/common/log_limiter.h"

#include <optional>

#include "gtest/gtest.h"

namespace iotauth {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'800'000'000);

TEST(LogLimiterTest, WritesABurstPerWindowThenReportsWhatItHeldBack) {
  LogLimiter limiter({.burst = 3, .window = absl::Seconds(10)});
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(limiter.Admit("a", kStart), std::optional<uint64_t>(0));
  }
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(limiter.Admit("a", kStart + absl::Seconds(9)), std::nullopt);
  }
  // The next window: the first line written carries the 5 held back, then none.
  EXPECT_EQ(limiter.Admit("a", kStart + absl::Seconds(10)), std::optional<uint64_t>(5));
  EXPECT_EQ(limiter.Admit("a", kStart + absl::Seconds(11)), std::optional<uint64_t>(0));
}

TEST(LogLimiterTest, KeysAreCappedApart) {
  LogLimiter limiter({.burst = 1, .window = absl::Seconds(10)});
  EXPECT_EQ(limiter.Admit("a", kStart), std::optional<uint64_t>(0));
  EXPECT_EQ(limiter.Admit("a", kStart), std::nullopt);
  EXPECT_EQ(limiter.Admit("b", kStart), std::optional<uint64_t>(0));
}

TEST(LogLimiterTest, AClockThatStepsBackStartsANewWindow) {
  LogLimiter limiter({.burst = 1, .window = absl::Seconds(10)});
  EXPECT_EQ(limiter.Admit("a", kStart), std::optional<uint64_t>(0));
  EXPECT_EQ(limiter.Admit("a", kStart), std::nullopt);
  // Without this, a clock set back an hour would silence the key for that hour.
  EXPECT_EQ(limiter.Admit("a", kStart - absl::Hours(1)), std::optional<uint64_t>(1));
}

TEST(LogLimiterTest, KeysPastTheCapShareOneBudget) {
  LogLimiter limiter({.burst = 1, .window = absl::Seconds(10), .max_keys = 2});
  EXPECT_EQ(limiter.Admit("a", kStart), std::optional<uint64_t>(0));
  EXPECT_EQ(limiter.Admit("b", kStart), std::optional<uint64_t>(0));
  // "c" and "d" share the overflow key: one line between them, and "a" stays apart.
  EXPECT_EQ(limiter.Admit("c", kStart), std::optional<uint64_t>(0));
  EXPECT_EQ(limiter.Admit("d", kStart), std::nullopt);
  EXPECT_EQ(limiter.Admit("a", kStart), std::nullopt);
}

}  // namespace
}  // namespace iotauth
