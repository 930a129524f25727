// libFuzzer target: brute-force protection (AttemptLimiter) under a script of
// failures, successes, lock checks and clock steps. The first byte picks the mode:
//  - exact (room for every key): IsLocked must match a model of the documented
//    schedule at every check: max_failures failures inside failure_memory of each
//    other lock a key for base_lockout, each further failure doubles it up to
//    max_lockout, a lockout never shrinks, and failures are forgotten failure_memory
//    after the later of the last failure and the end of the lockout;
//  - crowded (one shard of 4 entries, keys sprayed into it): a key seen locked right
//    after a failure stays locked for at least base_lockout whatever other keys do,
//    until a success of its own: no sweep or eviction may unlock it.
//
// Input: a mode byte, then operations (opcode byte, key byte, and for a clock step
// the seconds).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "services/common/fuzz_check.h"
#include "services/identity/attempt_limiter.h"

namespace {

using iotauth::identity::AttemptLimiter;

AttemptLimiter::Options TestOptions(bool crowded) {
  AttemptLimiter::Options o;
  o.max_failures = 3;
  o.base_lockout = absl::Seconds(10);
  o.max_lockout = absl::Seconds(80);
  o.failure_memory = absl::Seconds(60);
  o.capacity = crowded ? 4 : 1024;
  o.shards = 1;
  return o;
}

struct ModelEntry {
  uint32_t failures = 0;
  absl::Time last_failure = absl::InfinitePast();
  absl::Time locked_until = absl::InfinitePast();
};

// The documented schedule, for one failure.
void ModelFailure(const AttemptLimiter::Options& o, absl::Time now, ModelEntry* e) {
  if (e->failures > 0 && now > std::max(e->locked_until, e->last_failure) + o.failure_memory) {
    e->failures = 0;
  }
  ++e->failures;
  e->last_failure = now;
  if (e->failures >= o.max_failures) {
    const uint32_t doublings = std::min<uint32_t>(e->failures - o.max_failures, 20);
    const absl::Duration lockout =
        std::min(o.base_lockout * (int64_t{1} << doublings), o.max_lockout);
    e->locked_until = std::max(e->locked_until, now + lockout);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 4096) return 0;
  const bool crowded = (data[0] & 1) != 0;
  const AttemptLimiter::Options options = TestOptions(crowded);
  AttemptLimiter limiter(options);
  absl::Time now = absl::FromUnixSeconds(1800000000);
  std::map<std::string, ModelEntry> model;         // exact mode
  std::map<std::string, absl::Time> locked_least;  // crowded mode: locked at least until
  size_t i = 1;
  auto byte = [&]() -> uint8_t { return i < size ? data[i++] : 0; };
  while (i < size) {
    const uint8_t op = byte();
    // 16 keys: a device or a source address, as the authenticator keys them.
    const std::string key = absl::StrCat((op & 0x80) != 0 ? "addr:" : "dev:", byte() % 8);
    switch (op % 4) {
      case 0: {
        limiter.RecordFailure(key, now);
        if (crowded) {
          if (limiter.IsLocked(key, now)) {
            auto& t = locked_least[key];
            t = std::max(t, now + options.base_lockout);
          }
        } else {
          ModelFailure(options, now, &model[key]);
        }
        break;
      }
      case 1:
        limiter.RecordSuccess(key);
        model.erase(key);
        locked_least.erase(key);
        break;
      case 2:
        now += absl::Seconds(byte());
        break;
      default:
        break;  // a check only
    }
    if (crowded) {
      for (const auto& [k, until] : locked_least) {
        IOTAUTH_FUZZ_CHECK(now >= until || limiter.IsLocked(k, now),
                           "a lockout outlives any crowding");
      }
      IOTAUTH_FUZZ_CHECK(limiter.size() <= options.capacity, "bounded memory");
    } else {
      for (int d = 0; d < 16; ++d) {
        const std::string k = absl::StrCat(d < 8 ? "dev:" : "addr:", d % 8);
        auto it = model.find(k);
        const bool locked = it != model.end() && it->second.locked_until > now;
        IOTAUTH_FUZZ_CHECK(limiter.IsLocked(k, now) == locked, "lockout exactly as documented");
      }
    }
  }
  return 0;
}
