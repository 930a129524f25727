#include "services/identity/replay_cache.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace iotauth::identity {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(ReplayCacheTest, SecondSightingInsideWindowIsReplay) {
  ReplayCache cache(1000, 4);
  const ReplayKey key = ReplayCache::Key("t", "pk", "dn", "1700000000000", "signature-1");
  EXPECT_TRUE(cache.CheckAndInsert(key, kT0, kT0 + absl::Minutes(5)));
  EXPECT_FALSE(cache.CheckAndInsert(key, kT0 + absl::Minutes(4), kT0 + absl::Minutes(5)));
  // Another device with the same timestamp and signature bytes is not a replay.
  EXPECT_TRUE(
      cache.CheckAndInsert(ReplayCache::Key("t", "pk", "dn2", "1700000000000", "signature-1"), kT0,
                           kT0 + absl::Minutes(5)));
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

TEST(ReplayCacheTest, EntriesExpireWithTheWindow) {
  ReplayCache cache(1000, 4);
  EXPECT_TRUE(cache.CheckAndInsert("k", kT0, kT0 + absl::Minutes(5)));
  EXPECT_TRUE(cache.CheckAndInsert("k", kT0 + absl::Minutes(5), kT0 + absl::Minutes(10)));
  EXPECT_FALSE(cache.CheckAndInsert("k", kT0 + absl::Minutes(6), kT0 + absl::Minutes(10)));
  // Expired entries are collected on later inserts.
  for (int i = 0; i < 100; ++i) {
    cache.CheckAndInsert(absl::StrCat("x", i), kT0, kT0 + absl::Seconds(1));
  }
  // Enough later inserts to touch every shard (hashing is seeded per process, so
  // a handful could miss one): every expired entry is then gone, only these remain.
  for (int i = 0; i < 200; ++i) {
    cache.CheckAndInsert(absl::StrCat("z", i), kT0 + absl::Minutes(20), kT0 + absl::Minutes(25));
  }
  EXPECT_EQ(cache.size(), 200U);
}

TEST(ReplayCacheTest, Bounded) {
  ReplayCache cache(64, 4);
  for (int i = 0; i < 10000; ++i) {
    EXPECT_TRUE(cache.CheckAndInsert(absl::StrCat("k", i), kT0, kT0 + absl::Hours(1)));
  }
  EXPECT_LE(cache.size(), 64U);
  // The most recent entries are still remembered.
  EXPECT_FALSE(cache.CheckAndInsert("k9999", kT0, kT0 + absl::Hours(1)));
}

}  // namespace
}  // namespace iotauth::identity
