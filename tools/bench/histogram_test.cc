#include "tools/bench/histogram.h"

#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace iotauth::bench {
namespace {

TEST(HistogramTest, SmallValuesAreExact) {
  for (uint64_t v = 0; v < uint64_t{2} * Histogram::kSubBuckets; ++v) {
    const int i = Histogram::BucketIndex(v);
    EXPECT_EQ(Histogram::BucketLowest(i), v);
    EXPECT_EQ(Histogram::BucketHighest(i), v);
  }
}

TEST(HistogramTest, BucketsAreContiguousAndCoverTheRange) {
  for (int i = 1; i < Histogram::kNumBuckets; ++i) {
    ASSERT_EQ(Histogram::BucketLowest(i), Histogram::BucketHighest(i - 1) + 1) << i;
  }
  EXPECT_EQ(Histogram::BucketIndex(UINT64_MAX), Histogram::kNumBuckets - 1);
  EXPECT_EQ(Histogram::BucketHighest(Histogram::kNumBuckets - 1), UINT64_MAX);
}

TEST(HistogramTest, RelativeErrorIsBounded) {
  std::mt19937_64 rng(42);
  for (int n = 0; n < 100000; ++n) {
    const uint64_t v = rng() >> (rng() % 64);
    const int i = Histogram::BucketIndex(v);
    ASSERT_LE(Histogram::BucketLowest(i), v);
    ASSERT_GE(Histogram::BucketHighest(i), v);
    const auto width =
        static_cast<double>(Histogram::BucketHighest(i) - Histogram::BucketLowest(i));
    ASSERT_LE(width, static_cast<double>(v) / Histogram::kSubBuckets + 1.0) << v;
  }
}

TEST(HistogramTest, QuantilesOfAUniformSequence) {
  Histogram h;
  for (uint64_t v = 1; v <= 100000; ++v) h.Record(v * 1000);  // 1 us .. 100 ms in ns
  EXPECT_EQ(h.Count(), 100000u);
  EXPECT_EQ(h.Min(), 1000u);
  EXPECT_EQ(h.Max(), 100000000u);
  EXPECT_NEAR(h.Mean(), 50000500.0, 1.0);
  const struct {
    double q;
    double want;
  } kCases[] = {{0.5, 50e6}, {0.9, 90e6}, {0.99, 99e6}, {0.999, 99.9e6}, {1.0, 100e6}};
  for (const auto& c : kCases) {
    const auto got = static_cast<double>(h.Quantile(c.q));
    EXPECT_GE(got, c.want) << c.q;
    EXPECT_LE(got, c.want * (1.0 + 1.0 / Histogram::kSubBuckets)) << c.q;
  }
}

TEST(HistogramTest, OneOutlierIsTheMaxNotTheP99) {
  Histogram h;
  for (int i = 0; i < 999; ++i) h.Record(100);
  h.Record(5000000);
  EXPECT_EQ(h.Quantile(0.99), 100u);
  EXPECT_EQ(h.Quantile(0.999), 100u);
  EXPECT_EQ(h.Quantile(1.0), 5000000u);
  EXPECT_EQ(h.Max(), 5000000u);
}

TEST(HistogramTest, EmptyReportsZero) {
  Histogram h;
  EXPECT_EQ(h.Count(), 0u);
  EXPECT_EQ(h.Quantile(0.99), 0u);
  EXPECT_EQ(h.Min(), 0u);
  EXPECT_EQ(h.Max(), 0u);
  EXPECT_EQ(h.Mean(), 0.0);
}

TEST(HistogramTest, ConcurrentRecordsAreAllCounted) {
  Histogram h;
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 50000; ++i) {
        h.Record(static_cast<uint64_t>(t) * 1000 + static_cast<uint64_t>(i % 1000));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h.Count(), 200000u);
  EXPECT_EQ(h.Min(), 0u);
  EXPECT_EQ(h.Max(), 3999u);
}

}  // namespace
}  // namespace iotauth::bench
