// Bounded replay cache for device-triple connects: remembers each (device, timestamp,
// signature) until its timestamp leaves the accepted window, after which the window
// check refuses it anyway. Sharded so concurrent connects rarely share a lock.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace iotauth::identity {

class ReplayCache {
 public:
  // At most `capacity` live entries in total (split evenly over `shards`). When a
  // shard is full its oldest entry is evicted first: size the capacity for the peak
  // connect rate times the window (each entry costs about 2 * key size + 100 bytes).
  explicit ReplayCache(size_t capacity, size_t shards = 64);

  // Returns true and remembers `key` until `expires_at` when it is new (or its previous
  // entry expired by `now`); false when `key` is a live replay. Thread-safe.
  bool CheckAndInsert(absl::string_view key, absl::Time now, absl::Time expires_at);

  // Live and not-yet-collected entries (for tests and metrics).
  size_t size() const;

  // Builds the cache key of one triple connect.
  static std::string Key(absl::string_view tenant_id, absl::string_view product_key,
                         absl::string_view device_name, absl::string_view timestamp,
                         absl::string_view signature);

 private:
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, absl::Time> entries ABSL_GUARDED_BY(mu);
    // Insertion order, for eviction when full and for collecting expired entries.
    std::deque<std::pair<std::string, absl::Time>> order ABSL_GUARDED_BY(mu);
  };
  size_t per_shard_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace iotauth::identity
