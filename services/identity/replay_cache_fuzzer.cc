// libFuzzer target: the device-triple replay cache under a script of connects and
// clock steps, checked against a model of every (key, expiry) it accepted. One shard
// with a small capacity and per-device share, so that the caps are reached often:
//  - a key with a live entry (expiry >= now) is always a replay: no sweep, collection
//    or cap may forget it (that would let a captured connect be replayed);
//  - a key without one is never a replay;
//  - a refusal for room (kFull, kDeviceFull) happens only when the live entries (of
//    the shard, or of the device) really fill it, and never instead of kNew while
//    there is room (expired entries must be reclaimed);
//  - size() never exceeds the capacity.
//
// Input: operations, an opcode byte and operand bytes: check-and-insert (key index,
// device index, expiry offset) or advance the clock.
#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>

#include "absl/time/time.h"
#include "services/common/fuzz_check.h"
#include "services/identity/replay_cache.h"

namespace {

using iotauth::identity::ReplayCache;
using iotauth::identity::ReplayCheck;
using iotauth::identity::ReplayKey;

constexpr size_t kCapacity = 8;
constexpr size_t kPerDevice = 3;

// Model key: (tuple, mac, device) as the cache's.
using Key = std::pair<std::pair<uint64_t, uint64_t>, uint64_t>;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  ReplayCache cache(kCapacity, /*shards=*/1, kPerDevice);
  std::map<Key, absl::Time> accepted;  // every kNew, with its expiry
  absl::Time now = absl::FromUnixSeconds(1800000000);
  size_t i = 0;
  auto byte = [&]() -> uint8_t { return i < size ? data[i++] : 0; };
  while (i < size) {
    const uint8_t op = byte();
    if ((op & 3) == 3) {  // the clock moves on
      now += absl::Seconds(byte() % 8);
      continue;
    }
    // 24 keys over 4 devices (device 0: an opaque key, no per-device share).
    const uint8_t k = byte();
    ReplayKey key;
    key.tuple = k % 6;
    key.mac = (k / 6) % 2;
    key.device = (k / 12) % 4;
    const absl::Time expires_at = now + absl::Seconds(static_cast<int>(byte() % 16) - 2);
    const ReplayCheck r = cache.CheckAndInsert(key, now, expires_at);

    size_t live = 0;
    size_t live_device = 0;
    for (const auto& [mk, expiry] : accepted) {
      if (expiry < now) continue;
      ++live;
      if (mk.second == key.device) ++live_device;
    }
    const Key mk{{key.tuple, key.mac}, key.device};
    auto it = accepted.find(mk);
    const bool is_live = it != accepted.end() && it->second >= now;
    if (is_live) {
      IOTAUTH_FUZZ_CHECK(r == ReplayCheck::kReplay, "a live entry is a replay");
      continue;
    }
    IOTAUTH_FUZZ_CHECK(r != ReplayCheck::kReplay, "no replay without a live entry");
    const bool device_full = key.device != 0 && live_device >= kPerDevice;
    const bool full = live >= kCapacity;
    if (r == ReplayCheck::kDeviceFull) {
      IOTAUTH_FUZZ_CHECK(device_full,
                         "kDeviceFull only when the device's live entries fill its share");
    } else if (r == ReplayCheck::kFull) {
      IOTAUTH_FUZZ_CHECK(full && !device_full, "kFull only when live entries fill the shard");
    } else {
      // kNew. With room it must be; without room, only by reusing the key's own
      // expired entry (still held, so it takes no new room).
      IOTAUTH_FUZZ_CHECK(r == ReplayCheck::kNew, "a known answer");
      IOTAUTH_FUZZ_CHECK((!full && !device_full) || it != accepted.end(),
                         "kNew without room only for the key's own expired entry");
      accepted[mk] = expires_at;
    }
    if (!full && !device_full) IOTAUTH_FUZZ_CHECK(r == ReplayCheck::kNew, "room means kNew");
    IOTAUTH_FUZZ_CHECK(cache.size() <= kCapacity, "never over capacity");
  }
  return 0;
}
