#include "services/identity/replay_cache.h"

#include <algorithm>
#include <cstring>
#include <tuple>

#include "absl/hash/hash.h"

namespace iotauth::identity {

ReplayCache::ReplayCache(size_t capacity, size_t shards) {
  if (shards == 0) shards = 1;
  per_shard_ = capacity / shards;
  if (per_shard_ == 0) per_shard_ = 1;
  shards_.reserve(shards);
  for (size_t i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
}

ReplayKey ReplayCache::Key(absl::string_view tenant_id, absl::string_view product_key,
                           absl::string_view device_name, absl::string_view timestamp,
                           absl::string_view signature) {
  ReplayKey k;
  // absl hashes a string_view with its length, so ("ab","c") and ("a","bc") differ.
  k.tuple = absl::Hash<
      std::tuple<absl::string_view, absl::string_view, absl::string_view, absl::string_view>>()(
      std::make_tuple(tenant_id, product_key, device_name, timestamp));
  std::memcpy(&k.mac, signature.data(), std::min(signature.size(), sizeof(k.mac)));
  return k;
}

bool ReplayCache::CheckAndInsert(absl::string_view key, absl::Time now, absl::Time expires_at) {
  ReplayKey k;
  k.tuple = absl::Hash<absl::string_view>()(key);
  k.mac = absl::Hash<std::pair<absl::string_view, int>>()(std::make_pair(key, 1));
  return CheckAndInsert(k, now, expires_at);
}

bool ReplayCache::CheckAndInsert(const ReplayKey& key, absl::Time now, absl::Time expires_at) {
  // The MAC bytes are uniform: they pick the shard (the map hashes both halves).
  Shard& shard = *shards_[key.mac % shards_.size()];
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
  auto [it, inserted] = shard.entries.try_emplace(key, expires_at);
  if (!inserted) {
    if (it->second > now) return false;
    it->second = expires_at;
  }
  shard.order.emplace_back(key, expires_at);
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
