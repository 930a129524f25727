// Bounded replay cache for device-triple connects: remembers each (device, timestamp,
// signature) until its timestamp leaves the accepted window, after which the window
// check refuses it anyway. Sharded so concurrent connects rarely share a lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace iotauth::identity {

// What the cache remembers of one connect: 16 bytes, no allocation. `tuple` is the
// process-seeded absl hash of (tenant, product, device, timestamp); `mac` is the
// first 8 bytes of the signature, an HMAC under the device's secret (unforgeable and
// uniform). Two different connects share a key only if both halves collide, which no
// one can arrange for another device's connect: they cannot know its MAC in advance.
struct ReplayKey {
  uint64_t tuple = 0;
  uint64_t mac = 0;

  friend bool operator==(const ReplayKey& a, const ReplayKey& b) {
    return a.tuple == b.tuple && a.mac == b.mac;
  }
  template <typename H>
  friend H AbslHashValue(H h, const ReplayKey& k) {
    return H::combine(std::move(h), k.tuple, k.mac);
  }
};

class ReplayCache {
 public:
  // At most `capacity` live entries in total (split evenly over `shards`). When a
  // shard is full its oldest entry is evicted first: size the capacity for the peak
  // connect rate times the window (each entry costs about 60 bytes).
  explicit ReplayCache(size_t capacity, size_t shards = 64);

  // Returns true and remembers `key` until `expires_at` when it is new (or its previous
  // entry expired by `now`); false when `key` is a live replay. Thread-safe.
  bool CheckAndInsert(const ReplayKey& key, absl::Time now, absl::Time expires_at);
  // The same for an opaque key (digested with two differently seeded hashes).
  bool CheckAndInsert(absl::string_view key, absl::Time now, absl::Time expires_at);

  // Live and not-yet-collected entries (for tests and metrics).
  size_t size() const;

  // The key of one triple connect. `signature` is the raw MAC (16 to 32 bytes once
  // validated; a shorter one is zero-padded).
  static ReplayKey Key(absl::string_view tenant_id, absl::string_view product_key,
                       absl::string_view device_name, absl::string_view timestamp,
                       absl::string_view signature);

 private:
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<ReplayKey, absl::Time> entries ABSL_GUARDED_BY(mu);
    // Insertion order, for eviction when full and for collecting expired entries.
    std::deque<std::pair<ReplayKey, absl::Time>> order ABSL_GUARDED_BY(mu);
  };
  size_t per_shard_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace iotauth::identity
