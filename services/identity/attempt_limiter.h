// Brute-force protection: counts failed authentication attempts per key (a device, a
// source address) and locks the key out with exponential back-off once a threshold
// is passed. A locked-out attempt is answered "rate limited" before any crypto runs.
// Time is injected; memory is bounded.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace iotauth::identity {

class AttemptLimiter {
 public:
  struct Options {
    // Failures (inside `failure_memory` of each other) before the first lockout.
    uint32_t max_failures = 5;
    // First lockout; each further failure doubles it, up to `max_lockout`.
    absl::Duration base_lockout = absl::Seconds(30);
    absl::Duration max_lockout = absl::Minutes(15);
    // A key with no failure for this long, counted from the end of its lockout if it
    // was locked out, starts from zero again.
    absl::Duration failure_memory = absl::Minutes(15);
    // Keys tracked at most (failing keys only; successes leave no entry). When a
    // shard is full, expired entries are swept; if none expired, a new key takes the
    // place of a weak one (unlocked, fewest failures, among the first 8 unlocked in
    // seeded hash order), so that spraying fresh keys cannot blind the limiter;
    // only when the first 256 entries scanned are all locked out does a new key go
    // untracked.
    size_t capacity = 1 << 20;
    size_t shards = 64;
  };
  explicit AttemptLimiter(Options options);

  // True while `key` is locked out at `now`. Lock-free when no key in its shard has
  // failed recently (the common case). Thread-safe.
  bool IsLocked(absl::string_view key, absl::Time now) const;
  // Counts a failure; may start or extend a lockout.
  void RecordFailure(absl::string_view key, absl::Time now);
  // Forgets `key` (after a successful authentication).
  void RecordSuccess(absl::string_view key);

  size_t size() const;
  // Entries dropped to make room for new keys (a sign of key spraying).
  uint64_t evictions() const;

 private:
  struct Entry {
    uint32_t failures = 0;
    absl::Time last_failure;
    absl::Time locked_until = absl::InfinitePast();
  };
  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, Entry> entries ABSL_GUARDED_BY(mu);
    std::atomic<size_t> count{0};  // mirrors entries.size() for the lock-free check
    // No entry can be swept before this (the last sweep's earliest, lowered by every
    // change): a shard full of live entries is not scanned again on every failure,
    // which would make each failed attempt cost a scan of the shard.
    absl::Time sweep_not_before ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  };
  // When `e` stops counting: failure_memory after the later of its last failure and
  // the end of its lockout.
  absl::Time SweepableAt(const Entry& e) const;
  // Drops the weakest sampled unlocked entry of a full shard; false if none.
  bool EvictWeakest(Shard* shard, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard->mu);
  Shard& ShardFor(absl::string_view key) const;

  Options options_;
  size_t per_shard_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace iotauth::identity
