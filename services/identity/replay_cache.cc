#include "services/identity/replay_cache.h"

#include <algorithm>
#include <cstring>
#include <tuple>

#include "absl/hash/hash.h"

namespace iotauth::identity {

ReplayCache::ReplayCache(size_t capacity, size_t shards, size_t per_device)
    : per_device_(per_device == 0 ? 1 : per_device) {
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
  k.device = absl::Hash<std::tuple<absl::string_view, absl::string_view, absl::string_view, int>>()(
      std::make_tuple(tenant_id, product_key, device_name, 3));
  if (k.device == 0) k.device = 1;  // 0 means "no device"
  return k;
}

ReplayCheck ReplayCache::CheckAndInsert(absl::string_view key, absl::Time now,
                                        absl::Time expires_at) {
  ReplayKey k;
  k.tuple = absl::Hash<absl::string_view>()(key);
  k.mac = absl::Hash<std::pair<absl::string_view, int>>()(std::make_pair(key, 1));
  return CheckAndInsert(k, now, expires_at);
}

ReplayCache::Shard& ReplayCache::ShardFor(const ReplayKey& key) const {
  // Salted so the shard index is independent of the map's own hash of the key; by
  // device when there is one, so that its entries can be counted in one place.
  const size_t h = key.device != 0
                       ? absl::Hash<std::pair<uint64_t, int>>()(std::make_pair(key.device, 2))
                       : absl::Hash<std::pair<ReplayKey, int>>()(std::make_pair(key, 2));
  return *shards_[(h >> 32) % shards_.size()];
}

void ReplayCache::Erase(Shard& shard, absl::flat_hash_map<ReplayKey, absl::Time>::iterator it) {
  if (it->first.device != 0) {
    auto d = shard.per_device.find(it->first.device);
    if (d != shard.per_device.end() && --d->second == 0) shard.per_device.erase(d);
  }
  shard.entries.erase(it);
}

void ReplayCache::Sweep(Shard& shard, absl::Time now) {
  // An entry behind the front may have expired (a later insert with an earlier
  // timestamp). One sweep; until the earliest live expiry it finds, nothing more can
  // be freed.
  absl::Time earliest = absl::InfiniteFuture();
  for (auto e = shard.entries.begin(); e != shard.entries.end();) {
    if (e->second >= now) {
      earliest = std::min(earliest, e->second);
      ++e;
    } else {
      Erase(shard, e++);
    }
  }
  shard.no_expiry_before = earliest;
}

ReplayCheck ReplayCache::CheckAndInsert(const ReplayKey& key, absl::Time now,
                                        absl::Time expires_at) {
  Shard& shard = ShardFor(key);
  absl::MutexLock lock(&shard.mu);
  auto live = [now](absl::Time expiry) { return expiry >= now; };
  // Collect from the front: entries superseded by a later insert, and expired
  // entries. Insertion order approximates expiry order because accepted timestamps
  // all lie inside one window.
  while (!shard.order.empty()) {
    const auto& front = shard.order.front();
    auto old = shard.entries.find(front.first);
    const bool superseded = old == shard.entries.end() || old->second != front.second;
    if (!superseded) {
      if (live(old->second)) break;
      Erase(shard, old);
    }
    shard.order.pop_front();
  }
  auto it = shard.entries.find(key);
  if (it != shard.entries.end()) {
    if (live(it->second)) return ReplayCheck::kReplay;
    it->second = expires_at;
  } else {
    auto device_at_cap = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu) {
      if (key.device == 0) return false;
      auto d = shard.per_device.find(key.device);
      return d != shard.per_device.end() && d->second >= per_device_;
    };
    if ((shard.entries.size() >= per_shard_ || device_at_cap()) && now > shard.no_expiry_before) {
      Sweep(shard, now);
    }
    if (device_at_cap()) return ReplayCheck::kDeviceFull;
    if (shard.entries.size() >= per_shard_) return ReplayCheck::kFull;
    shard.entries.emplace(key, expires_at);
    if (key.device != 0) ++shard.per_device[key.device];
  }
  shard.no_expiry_before = std::min(shard.no_expiry_before, expires_at);
  shard.order.emplace_back(key, expires_at);
  if (shard.order.size() > 2 * per_shard_) {
    // A live entry at the front stops the collection above while sweeps free the
    // entries behind it: drop the records of what is gone, so that the order stays
    // within twice the capacity (amortised O(1): at most per_shard_ records survive).
    std::deque<std::pair<ReplayKey, absl::Time>> kept;
    for (const auto& o : shard.order) {
      auto e = shard.entries.find(o.first);
      if (e != shard.entries.end() && e->second == o.second) kept.push_back(o);
    }
    shard.order.swap(kept);
  }
  return ReplayCheck::kNew;
}

template <typename Count>
size_t ReplayCache::SumOverShards(Count count) const {
  size_t n = 0;
  for (const auto& s : shards_) {
    absl::MutexLock lock(&s->mu);
    n += count(*s);
  }
  return n;
}

size_t ReplayCache::order_records() const {
  return SumOverShards([](const Shard& s)
                           ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.order.size(); });
}

size_t ReplayCache::size() const {
  return SumOverShards([](const Shard& s)
                           ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.entries.size(); });
}

}  // namespace iotauth::identity
