#include "services/identity/replay_cache.h"

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace iotauth::identity {

ReplayCache::ReplayCache(size_t capacity, size_t shards) {
  if (shards == 0) shards = 1;
  per_shard_ = capacity / shards;
  if (per_shard_ == 0) per_shard_ = 1;
  shards_.reserve(shards);
  for (size_t i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
}

std::string ReplayCache::Key(absl::string_view tenant_id, absl::string_view product_key,
                             absl::string_view device_name, absl::string_view timestamp,
                             absl::string_view signature) {
  // NUL separators: none of the parts (validated text) contains one before `signature`.
  return absl::StrCat(tenant_id, absl::string_view("\0", 1), product_key,
                      absl::string_view("\0", 1), device_name, absl::string_view("\0", 1),
                      timestamp, absl::string_view("\0", 1), signature);
}

bool ReplayCache::CheckAndInsert(absl::string_view key, absl::Time now, absl::Time expires_at) {
  Shard& shard = *shards_[absl::Hash<absl::string_view>()(key) % shards_.size()];
  absl::MutexLock lock(&shard.mu);
  // Collect from the front: entries superseded by a later insert, expired entries, and
  // (when the shard is full) the oldest live entry. Insertion order approximates
  // expiry order because accepted timestamps all lie inside one window.
  while (!shard.order.empty()) {
    const auto& front = shard.order.front();
    auto old = shard.entries.find(front.first);
    const bool superseded = old == shard.entries.end() || old->second != front.second;
    if (!superseded) {
      const bool expired = old->second <= now;
      const bool full = shard.entries.size() >= per_shard_;
      if (!expired && !full) break;
      shard.entries.erase(old);
    }
    shard.order.pop_front();
  }
  auto it = shard.entries.find(key);
  if (it != shard.entries.end()) {
    if (it->second > now) return false;
    it->second = expires_at;
  } else {
    shard.entries.emplace(std::string(key), expires_at);
  }
  shard.order.emplace_back(std::string(key), expires_at);
  return true;
}

size_t ReplayCache::size() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    absl::MutexLock lock(&s->mu);
    n += s->entries.size();
  }
  return n;
}

}  // namespace iotauth::identity
