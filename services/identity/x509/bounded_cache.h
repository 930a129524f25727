// A small thread-safe bounded map for the X.509 caches: sharded by key, each shard
// evicting an arbitrary entry when full (cheaper than LRU bookkeeping and good enough
// for a working set that fits; a miss only costs a re-parse or a re-verification).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/synchronization/mutex.h"

namespace iotauth::identity::x509 {

template <typename V>
class BoundedCache {
 public:
  // Capacity 0 disables the cache: every Get misses and Put keeps nothing.
  explicit BoundedCache(size_t capacity)
      : enabled_(capacity > 0), per_shard_(capacity / kShards + 1) {}

  // Copies the value out under the shard lock; false on a miss.
  bool Get(const std::string& key, V* out) const {
    if (!enabled_) {
      misses_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    const Shard& s = shards_[ShardOf(key)];
    absl::MutexLock lock(&s.mu);
    auto it = s.map.find(key);
    if (it == s.map.end()) {
      misses_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    hits_.fetch_add(1, std::memory_order_relaxed);
    *out = it->second;
    return true;
  }
  void Put(const std::string& key, V value) {
    if (!enabled_) return;
    Shard& s = shards_[ShardOf(key)];
    absl::MutexLock lock(&s.mu);
    if (s.map.size() >= per_shard_ && s.map.find(key) == s.map.end()) {
      s.map.erase(s.map.begin());
    }
    s.map[key] = std::move(value);
  }
  void Erase(const std::string& key) {
    Shard& s = shards_[ShardOf(key)];
    absl::MutexLock lock(&s.mu);
    s.map.erase(key);
  }
  void Clear() {
    for (Shard& s : shards_) {
      absl::MutexLock lock(&s.mu);
      s.map.clear();
    }
  }
  size_t size() const {
    size_t n = 0;
    for (const Shard& s : shards_) {
      absl::MutexLock lock(&s.mu);
      n += s.map.size();
    }
    return n;
  }
  uint64_t hits() const { return hits_.load(); }
  uint64_t misses() const { return misses_.load(); }

 private:
  static constexpr size_t kShards = 16;
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, V> map;
  };
  static size_t ShardOf(const std::string& key) { return absl::Hash<std::string>()(key) % kShards; }

  bool enabled_;
  size_t per_shard_;
  std::array<Shard, kShards> shards_;
  mutable std::atomic<uint64_t> hits_{0}, misses_{0};
};

}  // namespace iotauth::identity::x509
