// Internal: a string-keyed map of immutable records split over independently locked
// shards. Readers take one shard's reader lock for a hash probe and a reference-count
// increment; writers block only their shard. Records are replaced, never mutated, so
// a reader keeps a consistent record after the lock is released.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

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
    return it == s.map.end() ? nullptr : it->second.value;
  }

  // Returns the replaced value (null if none). The entry carries the current stamp.
  std::shared_ptr<const V> Put(absl::string_view key, std::shared_ptr<const V> value) {
    Shard& s = ShardFor(key);
    const uint64_t stamp = stamp_.load(std::memory_order_acquire);
    std::shared_ptr<const V> old;
    {
      absl::MutexLock lock(&s.mu);
      Slot& slot = s.map[key];
      old = std::move(slot.value);
      slot.value = std::move(value);
      slot.stamp = stamp;
    }
    return old;  // released outside the lock
  }

  // Put, unless an entry exists for which `keep(existing)` holds (decided under the
  // shard's lock). True when written; the replaced value (null if none) goes to
  // `*old`.
  template <typename Keep>
  bool PutUnless(absl::string_view key, std::shared_ptr<const V> value, Keep keep,
                 std::shared_ptr<const V>* old) {
    Shard& s = ShardFor(key);
    const uint64_t stamp = stamp_.load(std::memory_order_acquire);
    absl::MutexLock lock(&s.mu);
    auto it = s.map.find(key);
    if (it != s.map.end() && it->second.value != nullptr && keep(*it->second.value)) return false;
    Slot& slot = it != s.map.end() ? it->second : s.map[key];
    *old = std::move(slot.value);  // released by the caller, outside the lock
    slot.value = std::move(value);
    slot.stamp = stamp;
    return true;
  }

  // Stamps, for a full resync without a window where entries are missing: start a
  // new stamp, Put everything the source still has, then erase the entries that
  // still carry an older stamp (KeysStampedBefore + EraseIfStampedBefore).
  uint64_t NewStamp() { return stamp_.fetch_add(1, std::memory_order_acq_rel) + 1; }

  // Keys of the entries last Put before `stamp`.
  std::vector<std::string> KeysStampedBefore(uint64_t stamp) const {
    std::vector<std::string> keys;
    for (size_t i = 0; i < count_; ++i) {
      absl::ReaderMutexLock lock(&shards_[i].mu);
      for (const auto& [key, slot] : shards_[i].map) {
        if (slot.stamp < stamp) keys.push_back(key);
      }
    }
    return keys;
  }

  // Erases `key` only if it was last Put before `stamp` (a Put racing the sweep
  // wins). Returns the removed value (null if none).
  std::shared_ptr<const V> EraseIfStampedBefore(absl::string_view key, uint64_t stamp) {
    Shard& s = ShardFor(key);
    std::shared_ptr<const V> old;
    {
      absl::MutexLock lock(&s.mu);
      auto it = s.map.find(key);
      if (it == s.map.end() || it->second.stamp >= stamp) return nullptr;
      old = std::move(it->second.value);
      s.map.erase(it);
    }
    return old;
  }

  // Returns the removed value (null if none).
  std::shared_ptr<const V> Erase(absl::string_view key) {
    Shard& s = ShardFor(key);
    std::shared_ptr<const V> old;
    {
      absl::MutexLock lock(&s.mu);
      auto it = s.map.find(key);
      if (it == s.map.end()) return nullptr;
      old = std::move(it->second.value);
      s.map.erase(it);
    }
    return old;
  }

  void Clear() {
    for (size_t i = 0; i < count_; ++i) {
      absl::flat_hash_map<std::string, Slot> dropped;
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
      n += shards_[i].map.capacity() * (sizeof(std::pair<std::string, Slot>) + 1);
    }
    return n;
  }

 private:
  struct Slot {
    std::shared_ptr<const V> value;
    uint64_t stamp = 0;  // stamp_ when last Put
  };
  // Cache-line aligned so readers of neighbouring shards do not share a line.
  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, Slot> map ABSL_GUARDED_BY(mu);
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
  std::atomic<uint64_t> stamp_{0};
};

}  // namespace iotauth::identity::internal
