#include "services/identity/attempt_limiter.h"

#include <algorithm>

#include "absl/hash/hash.h"

namespace iotauth::identity {

AttemptLimiter::AttemptLimiter(Options options) : options_(options) {
  if (options_.shards == 0) options_.shards = 1;
  if (options_.max_failures == 0) options_.max_failures = 1;
  per_shard_ = std::max<size_t>(1, options_.capacity / options_.shards);
  shards_ = std::make_unique<Shard[]>(options_.shards);
}

AttemptLimiter::Shard& AttemptLimiter::ShardFor(absl::string_view key) const {
  const size_t h = absl::Hash<absl::string_view>()(key);
  return shards_[(h >> 32) % options_.shards];
}

bool AttemptLimiter::IsLocked(absl::string_view key, absl::Time now) const {
  Shard& s = ShardFor(key);
  if (s.count.load(std::memory_order_relaxed) == 0) return false;
  absl::ReaderMutexLock lock(&s.mu);
  auto it = s.entries.find(key);
  return it != s.entries.end() && it->second.locked_until > now;
}

void AttemptLimiter::RecordFailure(absl::string_view key, absl::Time now) {
  Shard& s = ShardFor(key);
  absl::MutexLock lock(&s.mu);
  auto it = s.entries.find(key);
  if (it == s.entries.end()) {
    if (s.entries.size() >= per_shard_ && now > s.sweep_not_before) {
      // Sweep entries that are neither locked nor recent.
      absl::Time earliest = absl::InfiniteFuture();
      for (auto e = s.entries.begin(); e != s.entries.end();) {
        const Entry& v = e->second;
        if (now > SweepableAt(v)) {
          s.entries.erase(e++);
        } else {
          earliest = std::min(earliest, SweepableAt(v));
          ++e;
        }
      }
      s.sweep_not_before = earliest;
    }
    if (s.entries.size() >= per_shard_ && !EvictWeakest(&s, now)) {
      s.count.store(s.entries.size(), std::memory_order_relaxed);
      return;  // full of locked-out keys: this key is not tracked
    }
    it = s.entries.emplace(std::string(key), Entry()).first;
  }
  Entry& e = it->second;
  // Failures are remembered for failure_memory after the later of the last one and
  // the end of its lockout: counting from the last failure alone would start the
  // escalation over as soon as a lockout as long as failure_memory ended.
  if (e.failures > 0 && now > SweepableAt(e)) e.failures = 0;
  ++e.failures;
  e.last_failure = now;
  if (e.failures >= options_.max_failures) {
    const uint32_t doublings = std::min<uint32_t>(e.failures - options_.max_failures, 20);
    absl::Duration lockout = options_.base_lockout * (int64_t{1} << doublings);
    lockout = std::min(lockout, options_.max_lockout);
    e.locked_until = std::max(e.locked_until, now + lockout);
  }
  s.sweep_not_before = std::min(s.sweep_not_before, SweepableAt(e));
  s.count.store(s.entries.size(), std::memory_order_relaxed);
}

bool AttemptLimiter::EvictWeakest(Shard* s, absl::Time now) {
  // Among the first few unlocked entries in hash order (seeded per process, so an
  // attacker cannot place keys in it), the one with the fewest failures, the
  // oldest on a tie. Keys sprayed to fill the table carry one failure each, so a
  // key under a real attack, with several, is the last to go. Locked-out keys are
  // skipped, not counted, so that they cannot pile up where the sample looks and
  // blind it again; the scan stops after kMaxScan entries all the same.
  constexpr size_t kSample = 8;
  constexpr size_t kMaxScan = 256;
  auto victim = s->entries.end();
  size_t sampled = 0;
  size_t scanned = 0;
  for (auto e = s->entries.begin();
       e != s->entries.end() && sampled < kSample && scanned < kMaxScan; ++e, ++scanned) {
    const Entry& v = e->second;
    if (v.locked_until > now) continue;
    ++sampled;
    if (victim == s->entries.end() || v.failures < victim->second.failures ||
        (v.failures == victim->second.failures && v.last_failure < victim->second.last_failure)) {
      victim = e;
    }
  }
  if (victim == s->entries.end()) return false;
  s->entries.erase(victim);
  evictions_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

absl::Time AttemptLimiter::SweepableAt(const Entry& e) const {
  return std::max(e.locked_until, e.last_failure) + options_.failure_memory;
}

void AttemptLimiter::RecordSuccess(absl::string_view key) {
  Shard& s = ShardFor(key);
  if (s.count.load(std::memory_order_relaxed) == 0) return;
  absl::MutexLock lock(&s.mu);
  auto it = s.entries.find(key);
  if (it == s.entries.end()) return;
  s.entries.erase(it);
  s.count.store(s.entries.size(), std::memory_order_relaxed);
}

uint64_t AttemptLimiter::evictions() const { return evictions_.load(std::memory_order_relaxed); }

size_t AttemptLimiter::size() const {
  size_t n = 0;
  for (size_t i = 0; i < options_.shards; ++i) {
    absl::ReaderMutexLock lock(&shards_[i].mu);
    n += shards_[i].entries.size();
  }
  return n;
}

}  // namespace iotauth::identity
