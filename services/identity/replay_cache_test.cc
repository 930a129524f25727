#include "services/identity/replay_cache.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace iotauth::identity {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(ReplayCacheTest, SecondSightingInsideWindowIsReplay) {
  ReplayCache cache(1000, 4);
  const ReplayKey key = ReplayCache::Key("t", "pk", "dn", "1700000000000", "signature-1");
  EXPECT_EQ(cache.CheckAndInsert(key, kT0, kT0 + absl::Minutes(5)), ReplayCheck::kNew);
  EXPECT_EQ(cache.CheckAndInsert(key, kT0 + absl::Minutes(4), kT0 + absl::Minutes(5)),
            ReplayCheck::kReplay);
  // Another device with the same timestamp and signature bytes is not a replay.
  EXPECT_EQ(cache.CheckAndInsert(ReplayCache::Key("t", "pk", "dn2", "1700000000000", "signature-1"),
                                 kT0, kT0 + absl::Minutes(5)),
            ReplayCheck::kNew);
}

TEST(ReplayCacheTest, KeyCoversEveryPartAndKeepsFieldBoundaries) {
  const ReplayKey base = ReplayCache::Key("t", "pk", "dn", "1700000000000", "signature-1");
  EXPECT_EQ(base, ReplayCache::Key("t", "pk", "dn", "1700000000000", "signature-1"));
  EXPECT_FALSE(base == ReplayCache::Key("t2", "pk", "dn", "1700000000000", "signature-1"));
  EXPECT_FALSE(base == ReplayCache::Key("t", "pk2", "dn", "1700000000000", "signature-1"));
  EXPECT_FALSE(base == ReplayCache::Key("t", "pk", "dn", "1700000000001", "signature-1"));
  EXPECT_FALSE(base == ReplayCache::Key("t", "pk", "dn", "1700000000000", "SIGNATURE-1"));
  // ("tp","k") and ("t","pk") are different tenants and products.
  EXPECT_FALSE(base == ReplayCache::Key("tp", "k", "dn", "1700000000000", "signature-1"));
  // A signature shorter than 8 bytes is zero-padded, not read past its end.
  EXPECT_EQ(ReplayCache::Key("t", "pk", "dn", "1", "ab").mac,
            ReplayCache::Key("t", "pk", "dn", "1", std::string("ab\0\0", 4)).mac);
}

TEST(ReplayCacheTest, EntryIsLiveUpToAndIncludingItsExpiry) {
  // The window check accepts a timestamp exactly W old, whose entry expires at
  // ts + W == now: that connect must still be a replay then.
  ReplayCache cache(1000, 4);
  EXPECT_EQ(cache.CheckAndInsert("k", kT0, kT0 + absl::Minutes(5)), ReplayCheck::kNew);
  EXPECT_EQ(cache.CheckAndInsert("k", kT0 + absl::Minutes(5), kT0 + absl::Minutes(5)),
            ReplayCheck::kReplay);
  const absl::Time after = kT0 + absl::Minutes(5) + absl::Nanoseconds(1);
  EXPECT_EQ(cache.CheckAndInsert("k", after, after + absl::Minutes(5)), ReplayCheck::kNew);
  EXPECT_EQ(cache.CheckAndInsert("k", after + absl::Minutes(1), after + absl::Minutes(5)),
            ReplayCheck::kReplay);
}

TEST(ReplayCacheTest, ExpiredEntriesAreCollected) {
  ReplayCache cache(1000, 4);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(cache.CheckAndInsert(absl::StrCat("x", i), kT0, kT0 + absl::Seconds(1)),
              ReplayCheck::kNew);
  }
  // Enough later inserts to touch every shard (hashing is seeded per process, so
  // a handful could miss one): every expired entry is then gone, only these remain.
  for (int i = 0; i < 200; ++i) {
    cache.CheckAndInsert(absl::StrCat("z", i), kT0 + absl::Minutes(20), kT0 + absl::Minutes(25));
  }
  EXPECT_EQ(cache.size(), 200U);
}

TEST(ReplayCacheTest, FullOfLiveEntriesRefusesNewKeysAndEvictsNothing) {
  // The attack a full cache must not allow: flood it with fresh connects to push a
  // captured one out, then replay it.
  ReplayCache cache(64, 4);
  const ReplayKey victim = ReplayCache::Key("t", "pk", "victim", "1700000000000", "victim-mac");
  ASSERT_EQ(cache.CheckAndInsert(victim, kT0, kT0 + absl::Minutes(5)), ReplayCheck::kNew);
  int full = 0;
  for (int i = 0; i < 10000; ++i) {
    const ReplayCheck r = cache.CheckAndInsert(
        ReplayCache::Key("t", "pk", "attacker", absl::StrCat(1700000000001 + i), "m"), kT0,
        kT0 + absl::Minutes(5));
    ASSERT_NE(r, ReplayCheck::kReplay) << i;
    full += r == ReplayCheck::kFull ? 1 : 0;
  }
  EXPECT_GT(full, 9000);
  EXPECT_LE(cache.size(), 64U);
  EXPECT_EQ(cache.CheckAndInsert(victim, kT0 + absl::Minutes(1), kT0 + absl::Minutes(5)),
            ReplayCheck::kReplay);
  // Once the window has passed, the room comes back.
  const absl::Time later = kT0 + absl::Minutes(6);
  EXPECT_EQ(cache.CheckAndInsert("fresh", later, later + absl::Minutes(5)), ReplayCheck::kNew);
}

TEST(ReplayCacheTest, FullShardFindsEntriesThatExpiredBehindTheFront) {
  // One shard: the first insert expires late, the rest early. Insertion order then
  // differs from expiry order, and only a sweep past the front frees the room.
  ReplayCache cache(4, 1);
  ASSERT_EQ(cache.CheckAndInsert("late", kT0, kT0 + absl::Minutes(10)), ReplayCheck::kNew);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(cache.CheckAndInsert(absl::StrCat("early", i), kT0, kT0 + absl::Minutes(1)),
              ReplayCheck::kNew);
  }
  EXPECT_EQ(cache.CheckAndInsert("next", kT0, kT0 + absl::Minutes(1)), ReplayCheck::kFull);
  const absl::Time t = kT0 + absl::Minutes(2);
  EXPECT_EQ(cache.CheckAndInsert("next", t, t + absl::Minutes(1)), ReplayCheck::kNew);
  EXPECT_EQ(cache.CheckAndInsert("late", t, t + absl::Minutes(1)), ReplayCheck::kReplay);
  EXPECT_EQ(cache.size(), 2U);
}

TEST(ReplayCacheTest, AnInsertAfterASweepIsFoundByTheNextOne) {
  // A sweep remembers when the next entry can expire; an entry inserted later with an
  // earlier expiry must lower that bound, or the cache would report full while
  // holding an expired entry.
  ReplayCache cache(3, 1);
  ASSERT_EQ(cache.CheckAndInsert("a", kT0, kT0 + absl::Minutes(10)), ReplayCheck::kNew);
  ASSERT_EQ(cache.CheckAndInsert("b", kT0, kT0 + absl::Minutes(10)), ReplayCheck::kNew);
  ASSERT_EQ(cache.CheckAndInsert("c", kT0, kT0 + absl::Minutes(1)), ReplayCheck::kNew);
  const absl::Time t1 = kT0 + absl::Minutes(2);  // "c" expired behind the front
  ASSERT_EQ(cache.CheckAndInsert("d", t1, t1 + absl::Seconds(10)), ReplayCheck::kNew);
  ASSERT_EQ(cache.CheckAndInsert("e", t1, t1 + absl::Minutes(10)), ReplayCheck::kFull);
  const absl::Time t2 = t1 + absl::Seconds(11);  // "d" has expired now
  EXPECT_EQ(cache.CheckAndInsert("e", t2, t2 + absl::Minutes(10)), ReplayCheck::kNew);
}

TEST(ReplayCacheTest, OneDeviceCannotTakeEveryonesRoom) {
  // 4 shards of 64; each device at most 8 live entries.
  ReplayCache cache(256, 4, 8);
  auto key = [](const std::string& device, int ts) {
    return ReplayCache::Key("t", "p", device, absl::StrCat(ts), std::string(16, 'm'));
  };
  for (int ts = 0; ts < 8; ++ts) {
    ASSERT_EQ(cache.CheckAndInsert(key("greedy", ts), kT0, kT0 + absl::Minutes(5)),
              ReplayCheck::kNew);
  }
  EXPECT_EQ(cache.CheckAndInsert(key("greedy", 8), kT0, kT0 + absl::Minutes(5)),
            ReplayCheck::kDeviceFull);
  // A replay of one it holds is still a replay; other devices are unaffected.
  EXPECT_EQ(cache.CheckAndInsert(key("greedy", 3), kT0, kT0 + absl::Minutes(5)),
            ReplayCheck::kReplay);
  for (int d = 0; d < 20; ++d) {
    EXPECT_EQ(cache.CheckAndInsert(key(absl::StrCat("dev", d), 1), kT0, kT0 + absl::Minutes(5)),
              ReplayCheck::kNew);
  }
  // Once its entries expire, the device has room again.
  const absl::Time later = kT0 + absl::Minutes(6);
  EXPECT_EQ(cache.CheckAndInsert(key("greedy", 9), later, later + absl::Minutes(5)),
            ReplayCheck::kNew);
}

TEST(ReplayCacheTest, BookkeepingStaysBoundedBehindALiveFront) {
  // A long-lived entry at the front stops collection from the front; the entries
  // behind it expire and are swept, and their order records must go too.
  ReplayCache cache(4, 1);
  ASSERT_EQ(cache.CheckAndInsert("late", kT0, kT0 + absl::Hours(1)), ReplayCheck::kNew);
  absl::Time t = kT0;
  for (int i = 0; i < 1000; ++i) {
    t += absl::Seconds(2);
    ASSERT_EQ(cache.CheckAndInsert(absl::StrCat("k", i), t, t + absl::Seconds(1)),
              ReplayCheck::kNew)
        << i;
  }
  EXPECT_LE(cache.size(), 4U);
  EXPECT_LE(cache.order_records(), 8U);
  EXPECT_EQ(cache.CheckAndInsert("late", t, t + absl::Hours(1)), ReplayCheck::kReplay);
}

}  // namespace
}  // namespace iotauth::identity
