#include "services/audit/block_filter.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace iotauth::audit {
namespace {

TEST(StableHash64Test, IsFixedForever) {
  // Persisted in every block summary: these values must never change. Golden
  // values from an independent Python implementation of FNV-1a 64 + SplitMix64.
  EXPECT_EQ(StableHash64(""), 0xf52a15e9a9b5e89bULL);
  EXPECT_EQ(StableHash64("device-1"), 0x9a425baa2e7d7b35ULL);
  EXPECT_EQ(StableHash64(absl::string_view("d\0device-1", 10)), 0x63a3f961147f9b78ULL);
  EXPECT_NE(StableHash64("device-1"), StableHash64("device-2"));
}

TEST(BlockFilterTest, NoFalseNegatives) {
  BlockFilter f;
  for (int i = 0; i < static_cast<int>(kBlockEvents); ++i) f.AddDevice(absl::StrCat("dev-", i));
  f.AddTenant("acme");
  for (int i = 0; i < static_cast<int>(kBlockEvents); ++i) {
    ASSERT_TRUE(f.MayContainDevice(absl::StrCat("dev-", i))) << i;
  }
  EXPECT_TRUE(f.MayContainTenant("acme"));
}

TEST(BlockFilterTest, KindsAreSeparateAndFalsePositivesRare) {
  BlockFilter f;
  for (int i = 0; i < static_cast<int>(kBlockEvents); ++i) f.AddDevice(absl::StrCat("dev-", i));
  f.AddTenant("acme");
  // A tenant named like a device is a different key.
  EXPECT_FALSE(f.MayContainTenant("dev-1"));
  EXPECT_FALSE(f.MayContainDevice("acme"));
  int false_positives = 0;
  constexpr int kTries = 100000;
  for (int i = 0; i < kTries; ++i) {
    if (f.MayContainDevice(absl::StrCat("other-", i))) ++false_positives;
  }
  // Expected about 0.24% with a full block; allow twice that.
  EXPECT_LT(false_positives, kTries * 5 / 1000) << false_positives;
}

TEST(BlockFilterTest, EmptyFilterMatchesNothing) {
  BlockFilter f;
  EXPECT_FALSE(f.MayContainDevice("d"));
  EXPECT_FALSE(f.MayContainTenant("t"));
  EXPECT_EQ(f.bytes().size(), BlockFilter::kBits / 8);
}

TEST(BlockFilterTest, RoundTripsThroughBytes) {
  BlockFilter f;
  f.AddDevice("d1");
  f.AddTenant("t1");
  auto g = BlockFilter::FromBytes(f.bytes());
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->MayContainDevice("d1"));
  EXPECT_TRUE(g->MayContainTenant("t1"));
  EXPECT_FALSE(g->MayContainDevice("d2"));
  EXPECT_EQ(BlockFilter::FromBytes("short").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlockFilter::FromBytes("").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace iotauth::audit
