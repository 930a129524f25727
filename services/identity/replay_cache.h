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
// The shard comes from a process-seeded hash of both halves, not from the MAC bytes a
// device sends in the clear, so no one can aim connects at another device's shard.
//
// `device` (a process-seeded hash of tenant, product and device; 0 for opaque keys)
// picks the shard, so that one device's entries share a shard and can be counted:
// a device holding a valid secret could otherwise fill the whole cache with
// distinct timestamps and have every timestamped connect of every tenant refused.
struct ReplayKey {
  uint64_t tuple = 0;
  uint64_t mac = 0;
  uint64_t device = 0;

  friend bool operator==(const ReplayKey& a, const ReplayKey& b) {
    return a.tuple == b.tuple && a.mac == b.mac && a.device == b.device;
  }
  template <typename H>
  friend H AbslHashValue(H h, const ReplayKey& k) {
    return H::combine(std::move(h), k.tuple, k.mac, k.device);
  }
};

// What CheckAndInsert found.
enum class ReplayCheck {
  kNew,         // not seen inside its window: now remembered
  kReplay,      // a live entry holds this key
  kFull,        // the key's shard holds only live entries: nothing can be checked
  kDeviceFull,  // this device already holds its share of live entries
};

class ReplayCache {
 public:
  // At most `capacity` live entries in total (split evenly over `shards`). A live
  // entry is never evicted (that would let its connect be replayed): when a shard is
  // full of live entries, new keys get kFull and the caller must refuse them. Size the
  // capacity for the peak connect rate times the window, with headroom (each entry
  // costs about 60 bytes).
  // A device (ReplayKey::device) holds at most `per_device` live entries: beyond
  // that its new connects get kDeviceFull, and other devices keep their room.
  explicit ReplayCache(size_t capacity, size_t shards = 64, size_t per_device = 1024);

  // kNew, and remembers `key` until `expires_at`, when it is new or its previous entry
  // has expired; an entry is live while `expires_at >= now` (the same bound as the
  // timestamp window check, so a timestamp exactly at the window's edge is still
  // remembered). Thread-safe.
  ReplayCheck CheckAndInsert(const ReplayKey& key, absl::Time now, absl::Time expires_at);
  // The same for an opaque key (digested with two differently seeded hashes).
  ReplayCheck CheckAndInsert(absl::string_view key, absl::Time now, absl::Time expires_at);

  // Live and not-yet-collected entries (for tests and metrics).
  size_t size() const;
  // Insertion-order records kept for collection; at most twice the capacity (tests).
  size_t order_records() const;

  // The key of one triple connect. `signature` is the raw MAC (16 to 32 bytes once
  // validated; a shorter one is zero-padded).
  static ReplayKey Key(absl::string_view tenant_id, absl::string_view product_key,
                       absl::string_view device_name, absl::string_view timestamp,
                       absl::string_view signature);

 private:
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<ReplayKey, absl::Time> entries ABSL_GUARDED_BY(mu);
    // Entries held per device (ReplayKey::device other than 0), live or not yet
    // collected.
    absl::flat_hash_map<uint64_t, uint32_t> per_device ABSL_GUARDED_BY(mu);
    // Insertion order, for collecting expired entries from the front.
    std::deque<std::pair<ReplayKey, absl::Time>> order ABSL_GUARDED_BY(mu);
    // No entry expires before this (the last full sweep's earliest live expiry,
    // lowered by every insert): a full shard is swept again only once something can
    // have expired, so a flood of connects against a full shard costs no scan each.
    absl::Time no_expiry_before ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  };
  Shard& ShardFor(const ReplayKey& key) const;
  // The sum of count(shard) over the shards, each read under its lock.
  template <typename Count>
  size_t SumOverShards(Count count) const;
  // Erases `it`, keeping the per-device count.
  static void Erase(Shard& shard, absl::flat_hash_map<ReplayKey, absl::Time>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // The one full sweep of expired entries (see CheckAndInsert).
  static void Sweep(Shard& shard, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  size_t per_shard_;
  size_t per_device_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace iotauth::identity
