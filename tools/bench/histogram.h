// Log-bucketed latency histogram for the load generator (HDR-histogram style).
// Values are non-negative integers (nanoseconds here); each power of two is split
// into 128 linear sub-buckets, so any reported value is within 1/128 (< 0.8%) of the
// recorded one, over the whole 64-bit range, in a fixed 59 KB array.

#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace iotauth::bench {

class Histogram {
 public:
  // Sub-buckets per power of two: 2^kSubBucketBits.
  static constexpr int kSubBucketBits = 7;
  static constexpr int kSubBuckets = 1 << kSubBucketBits;
  // Values below 2 * kSubBuckets are recorded exactly; each further power of two
  // adds kSubBuckets buckets; 64-bit values need (64 - kSubBucketBits + 1) groups.
  static constexpr int kNumBuckets = (64 - kSubBucketBits + 1) * kSubBuckets;

  Histogram();

  // Thread-safe and lock-free (relaxed atomic increments): callbacks on any
  // gRPC thread record into one shared histogram.
  void Record(uint64_t value);

  // The following read a consistent view only once recording has stopped.
  uint64_t Count() const { return count_.load(std::memory_order_relaxed); }
  uint64_t Min() const;
  uint64_t Max() const { return max_.load(std::memory_order_relaxed); }
  double Mean() const;
  // Smallest value v such that at least `q` (0..1) of the recorded values are <= v,
  // reported as the highest value equivalent to v's bucket, clamped to Max().
  // 0 when empty.
  uint64_t Quantile(double q) const;

  // Bucket arithmetic, exposed for tests.
  static int BucketIndex(uint64_t value);
  static uint64_t BucketLowest(int index);
  static uint64_t BucketHighest(int index);

 private:
  std::array<std::atomic<uint64_t>, kNumBuckets> counts_;
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_{0};
  std::atomic<uint64_t> min_{UINT64_MAX};
  std::atomic<uint64_t> max_{0};
};

}  // namespace iotauth::bench
