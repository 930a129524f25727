#include "tools/bench/histogram.h"

#include <algorithm>
#include <cmath>

namespace iotauth::bench {
namespace {

int MostSignificantBit(uint64_t v) { return 63 - __builtin_clzll(v | 1); }

}  // namespace

Histogram::Histogram() {
  for (auto& c : counts_) c.store(0, std::memory_order_relaxed);
}

// index = e * kSubBuckets + (value >> e), where e = max(0, msb - kSubBucketBits):
// values below 2 * kSubBuckets map to themselves; above, (value >> e) lies in
// [kSubBuckets, 2 * kSubBuckets), so each power of two gets its own kSubBuckets slots.
int Histogram::BucketIndex(uint64_t value) {
  const int e = std::max(0, MostSignificantBit(value) - kSubBucketBits);
  return e * kSubBuckets + static_cast<int>(value >> e);
}

uint64_t Histogram::BucketLowest(int index) {
  if (index < 2 * kSubBuckets) return static_cast<uint64_t>(index);
  const int e = index / kSubBuckets - 1;
  const auto m = static_cast<uint64_t>(index - e * kSubBuckets);
  return m << e;
}

uint64_t Histogram::BucketHighest(int index) {
  if (index < 2 * kSubBuckets) return static_cast<uint64_t>(index);
  const int e = index / kSubBuckets - 1;
  const auto m = static_cast<uint64_t>(index - e * kSubBuckets);
  // For the last bucket, ((m + 1) << e) wraps to 0 and the result is UINT64_MAX.
  return ((m + 1) << e) - 1;
}

void Histogram::Record(uint64_t value) {
  counts_[BucketIndex(value)].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
  uint64_t cur = min_.load(std::memory_order_relaxed);
  while (value < cur && !min_.compare_exchange_weak(cur, value, std::memory_order_relaxed)) {
  }
  cur = max_.load(std::memory_order_relaxed);
  while (value > cur && !max_.compare_exchange_weak(cur, value, std::memory_order_relaxed)) {
  }
}

uint64_t Histogram::Min() const { return Count() == 0 ? 0 : min_.load(std::memory_order_relaxed); }

double Histogram::Mean() const {
  const uint64_t n = Count();
  return n == 0 ? 0.0 : static_cast<double>(sum_.load(std::memory_order_relaxed)) / n;
}

uint64_t Histogram::Quantile(double q) const {
  const uint64_t n = Count();
  if (n == 0) return 0;
  q = std::min(1.0, std::max(0.0, q));
  // Rank of the wanted value, 1-based: ceil(q * n), at least 1.
  const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * n)));
  uint64_t seen = 0;
  for (int i = 0; i < kNumBuckets; ++i) {
    seen += counts_[i].load(std::memory_order_relaxed);
    if (seen >= rank) return std::min(BucketHighest(i), Max());
  }
  return Max();
}

}  // namespace iotauth::bench
