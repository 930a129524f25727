#include "services/identity/attempt_limiter.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace iotauth::identity {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

AttemptLimiter::Options Opts() {
  AttemptLimiter::Options o;
  o.max_failures = 3;
  o.base_lockout = absl::Seconds(10);
  o.max_lockout = absl::Seconds(35);
  o.failure_memory = absl::Minutes(1);
  o.shards = 4;
  return o;
}

TEST(AttemptLimiterTest, ExponentialLockoutCappedAndResetOnSuccess) {
  AttemptLimiter l(Opts());
  EXPECT_FALSE(l.IsLocked("k", kT0));
  l.RecordFailure("k", kT0);
  l.RecordFailure("k", kT0);
  EXPECT_FALSE(l.IsLocked("k", kT0));
  l.RecordFailure("k", kT0);  // 3rd: 10 s
  EXPECT_TRUE(l.IsLocked("k", kT0 + absl::Seconds(9)));
  EXPECT_FALSE(l.IsLocked("k", kT0 + absl::Seconds(10)));
  l.RecordFailure("k", kT0 + absl::Seconds(10));  // 4th: 20 s
  EXPECT_TRUE(l.IsLocked("k", kT0 + absl::Seconds(29)));
  EXPECT_FALSE(l.IsLocked("k", kT0 + absl::Seconds(30)));
  l.RecordFailure("k", kT0 + absl::Seconds(30));  // 5th: 40 s capped to 35 s
  EXPECT_TRUE(l.IsLocked("k", kT0 + absl::Seconds(64)));
  EXPECT_FALSE(l.IsLocked("k", kT0 + absl::Seconds(65)));
  EXPECT_FALSE(l.IsLocked("other", kT0 + absl::Seconds(31)));
  l.RecordSuccess("k");
  EXPECT_EQ(l.size(), 0U);
}

TEST(AttemptLimiterTest, OldFailuresAreForgotten) {
  AttemptLimiter l(Opts());
  l.RecordFailure("k", kT0);
  l.RecordFailure("k", kT0);
  l.RecordFailure("k", kT0 + absl::Minutes(2));  // the first two are forgotten
  EXPECT_FALSE(l.IsLocked("k", kT0 + absl::Minutes(2)));
}

TEST(AttemptLimiterTest, Bounded) {
  auto o = Opts();
  o.capacity = 8;
  AttemptLimiter l(o);
  for (int i = 0; i < 1000; ++i) l.RecordFailure(absl::StrCat("k", i), kT0);
  EXPECT_LE(l.size(), 8U);
  // Once expired, entries are swept to make room.
  l.RecordFailure("new", kT0 + absl::Minutes(5));
  for (int i = 0; i < 16; ++i) l.RecordFailure(absl::StrCat("n", i), kT0 + absl::Minutes(5));
  EXPECT_LE(l.size(), 8U);
  EXPECT_GE(l.size(), 2U);
}

TEST(AttemptLimiterTest, FullShardMakesRoomOnceAnEntryCanBeSwept) {
  auto o = Opts();
  o.capacity = 2;
  o.shards = 1;
  AttemptLimiter l(o);
  l.RecordFailure("a", kT0);
  l.RecordFailure("b", kT0 + absl::Seconds(30));
  l.RecordFailure("c", kT0 + absl::Seconds(31));  // full of live entries: not tracked
  EXPECT_EQ(l.size(), 2U);
  // "a" falls out of failure_memory after kT0 + 1 min: its room goes to the next key.
  for (int i = 0; i < 3; ++i) l.RecordFailure("d", kT0 + absl::Seconds(61));
  EXPECT_TRUE(l.IsLocked("d", kT0 + absl::Seconds(62)));
  EXPECT_EQ(l.size(), 2U);
  // A failure of a tracked key extends its life: "b" is not swept at kT0 + 91 s.
  l.RecordFailure("b", kT0 + absl::Seconds(80));
  l.RecordFailure("e", kT0 + absl::Seconds(91));
  EXPECT_EQ(l.size(), 2U);
  l.RecordFailure("b", kT0 + absl::Seconds(91));
  l.RecordFailure("b", kT0 + absl::Seconds(92));
  EXPECT_TRUE(l.IsLocked("b", kT0 + absl::Seconds(93)));
}

}  // namespace
}  // namespace iotauth::identity
