// Internal: a string-keyed map of immutable records split over independently locked
// shards. Readers take one shard's reader lock for a hash probe and a reference-count
// increment; writers block only their shard. Records are replaced, never mutated, so
// a reader keeps a consistent record after the lock is released.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace iotauth::identity::internal {

template <typename V>
class ShardedMap {
 public:
  explicit ShardedMap(size_t shards) : count_(shards == 0 ? 1 : shards) {
    shards_ = std::make_unique<Shard[]>(count_);
  }

  std::shared_ptr<const V> Find(absl::string_view key) const {
    const Shard& s = ShardFor(key);
    absl::ReaderMutexLock lock(&s.mu);
    auto it = s.map.find(key);
    return it == s.map.end() ? nullptr : it->second;
  }

  // Returns the replaced value (null if none).
  std::shared_ptr<const V> Put(absl::string_view key, std::shared_ptr<const V> value) {
    Shard& s = ShardFor(key);
    std::shared_ptr<const V> old;
    {
      absl::MutexLock lock(&s.mu);
      auto& slot = s.map[key];
      old = std::move(slot);
      slot = std::move(value);
    }
    return old;  // released outside the lock
  }

  // Returns the removed value (null if none).
  std::shared_ptr<const V> Erase(absl::string_view key) {
    Shard& s = ShardFor(key);
    std::shared_ptr<const V> old;
    {
      absl::MutexLock lock(&s.mu);
      auto it = s.map.find(key);
      if (it == s.map.end()) return nullptr;
      old = std::move(it->second);
      s.map.erase(it);
    }
    return old;
  }

  void Clear() {
    for (size_t i = 0; i < count_; ++i) {
      absl::flat_hash_map<std::string, std::shared_ptr<const V>> dropped;
      {
        absl::MutexLock lock(&shards_[i].mu);
        dropped.swap(shards_[i].map);
      }
    }
  }

  size_t size() const {
    size_t n = 0;
    for (size_t i = 0; i < count_; ++i) {
      absl::ReaderMutexLock lock(&shards_[i].mu);
      n += shards_[i].map.size();
    }
    return n;
  }

  // Bytes of the shards' hash tables (slots and control bytes), excluding what the
  // keys and values own.
  size_t TableBytes() const {
    size_t n = 0;
    for (size_t i = 0; i < count_; ++i) {
      absl::ReaderMutexLock lock(&shards_[i].mu);
      n += shards_[i].map.capacity() *
           (sizeof(std::pair<std::string, std::shared_ptr<const V>>) + 1);
    }
    return n;
  }

 private:
  // Cache-line aligned so readers of neighbouring shards do not share a line.
  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, std::shared_ptr<const V>> map ABSL_GUARDED_BY(mu);
  };

  const Shard& ShardFor(absl::string_view key) const {
    return shards_[Mix(absl::Hash<absl::string_view>()(key)) % count_];
  }
  Shard& ShardFor(absl::string_view key) {
    return shards_[Mix(absl::Hash<absl::string_view>()(key)) % count_];
  }
  // The table uses the hash's low bits; pick the shard from the high bits.
  static size_t Mix(size_t h) { return static_cast<size_t>(h >> 32) ^ (h & 0xffff); }

  size_t count_;
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace iotauth::identity::internal
