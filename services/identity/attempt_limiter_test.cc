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

TEST(AttemptLimiterTest, EscalationDoesNotStartOverWhenTheLongestLockoutEnds) {
  // failure_memory equal to max_lockout (the defaults): a failure right after the
  // longest lockout ends must lock again at once, not start from zero.
  auto o = Opts();
  o.max_lockout = absl::Minutes(1);
  AttemptLimiter l(o);
  absl::Time t = kT0;
  for (int i = 0; i < 6; ++i) {  // 10 s, 20 s, 40 s, then 60 s (capped)
    l.RecordFailure("k", t);
    while (l.IsLocked("k", t)) t += absl::Seconds(1);
  }
  ASSERT_FALSE(l.IsLocked("k", t));
  l.RecordFailure("k", t + absl::Milliseconds(1));
  EXPECT_TRUE(l.IsLocked("k", t + absl::Seconds(59)));
  // Forgotten failure_memory after the lockout's end.
  const absl::Time later = t + absl::Minutes(2) + absl::Seconds(2);
  l.RecordFailure("k", later);
  EXPECT_FALSE(l.IsLocked("k", later));
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

// Locked-out keys hold their place; once one can be swept (failure_memory after its
// lockout ended), its room goes to the next key.
TEST(AttemptLimiterTest, FullShardOfLockedKeysMakesRoomOnceOneCanBeSwept) {
  auto o = Opts();
  o.capacity = 2;
  o.shards = 1;
  AttemptLimiter l(o);
  for (int i = 0; i < 3; ++i) l.RecordFailure("a", kT0);                     // locked to +10 s
  for (int i = 0; i < 3; ++i) l.RecordFailure("b", kT0 + absl::Seconds(5));  // to +15 s
  for (int i = 0; i < 3; ++i) l.RecordFailure("c", kT0 + absl::Seconds(6));
  EXPECT_FALSE(l.IsLocked("c", kT0 + absl::Seconds(7))) << "no room: c is not tracked";
  EXPECT_TRUE(l.IsLocked("b", kT0 + absl::Seconds(7)));
  EXPECT_EQ(l.size(), 2U);
  EXPECT_EQ(l.evictions(), 0U);
  // "a" is swept after kT0 + 10 s + 1 min (failure_memory after its lockout ended).
  for (int i = 0; i < 3; ++i) l.RecordFailure("d", kT0 + absl::Seconds(71));
  EXPECT_TRUE(l.IsLocked("d", kT0 + absl::Seconds(72)));
  EXPECT_EQ(l.size(), 2U);
  EXPECT_EQ(l.evictions(), 0U) << "swept, not evicted";
}

// Spraying fresh keys into a full shard evicts the weakest unlocked entry: keys with
// one failure go before a key under attack, which keeps its count and gets locked.
TEST(AttemptLimiterTest, FullShardEvictsTheWeakestUnlockedKey) {
  auto o = Opts();
  o.capacity = 4;
  o.shards = 1;
  AttemptLimiter l(o);
  l.RecordFailure("target", kT0);
  l.RecordFailure("target", kT0 + absl::Seconds(1));  // two failures
  for (int i = 0; i < 200; ++i) {
    l.RecordFailure(absl::StrCat("spray", i), kT0 + absl::Seconds(2) + absl::Milliseconds(i));
  }
  EXPECT_EQ(l.size(), 4U);
  EXPECT_EQ(l.evictions(), 197U);
  l.RecordFailure("target", kT0 + absl::Seconds(3));  // the third: locked
  EXPECT_TRUE(l.IsLocked("target", kT0 + absl::Seconds(4)));
  // The newest sprayed key is tracked (it took a place), so its next failures count.
  l.RecordFailure("spray199", kT0 + absl::Seconds(5));
  l.RecordFailure("spray199", kT0 + absl::Seconds(5));
  EXPECT_TRUE(l.IsLocked("spray199", kT0 + absl::Seconds(6)));
}

// A full shard whose entries are all locked out leaves new keys untracked rather
// than free a lockout.
TEST(AttemptLimiterTest, LockedKeysAreNeverEvicted) {
  auto o = Opts();
  o.capacity = 2;
  o.shards = 1;
  AttemptLimiter l(o);
  for (int i = 0; i < 3; ++i) l.RecordFailure("a", kT0);
  for (int i = 0; i < 3; ++i) l.RecordFailure("b", kT0);
  for (int i = 0; i < 10; ++i) l.RecordFailure(absl::StrCat("n", i), kT0 + absl::Seconds(1));
  EXPECT_TRUE(l.IsLocked("a", kT0 + absl::Seconds(2)));
  EXPECT_TRUE(l.IsLocked("b", kT0 + absl::Seconds(2)));
  EXPECT_EQ(l.evictions(), 0U);
  // Once the lockouts end (but before they may be swept), the entries may go.
  l.RecordFailure("late", kT0 + absl::Seconds(11));
  EXPECT_EQ(l.evictions(), 1U);
  EXPECT_EQ(l.size(), 2U);
}

// Locked-out keys are skipped, not counted, when looking for a place: however many
// come first in hash order, the shard's unlocked entry is found.
TEST(AttemptLimiterTest, LockedKeysDoNotHideTheUnlockedOnes) {
  auto o = Opts();
  o.capacity = 9;
  o.shards = 1;
  AttemptLimiter l(o);
  for (int k = 0; k < 8; ++k) {
    for (int i = 0; i < 3; ++i) l.RecordFailure(absl::StrCat("locked", k), kT0);
  }
  for (int i = 0; i < 20; ++i) l.RecordFailure(absl::StrCat("spray", i), kT0 + absl::Seconds(1));
  EXPECT_EQ(l.size(), 9U);
  EXPECT_EQ(l.evictions(), 19U);  // each new key took the previous one's place
  l.RecordFailure("spray19", kT0 + absl::Seconds(2));
  l.RecordFailure("spray19", kT0 + absl::Seconds(2));
  EXPECT_TRUE(l.IsLocked("spray19", kT0 + absl::Seconds(3)));
  for (int k = 0; k < 8; ++k) {
    EXPECT_TRUE(l.IsLocked(absl::StrCat("locked", k), kT0 + absl::Seconds(3))) << k;
  }
}

}  // namespace
}  // namespace iotauth::identity
