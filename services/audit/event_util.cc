#include "services/audit/event_util.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/common/crypto.h"
#include "services/common/proto_time.h"
#include "services/common/utf8.h"

namespace iotauth::audit {

namespace {

// Bumped in the child after fork() so that no thread reuses random bytes its
// parent may also use (a repeated event_id would be deduplicated away: a lost event).
std::atomic<uint64_t> g_fork_generation{0};

uint64_t ForkGeneration() {
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, [] { g_fork_generation.fetch_add(1); });
    return true;
  }();
  (void)registered;
  return g_fork_generation.load(std::memory_order_relaxed);
}

// Per-thread buffer of CSPRNG output: one RAND_bytes call per 256 ids instead of one
// per id (RAND_bytes costs about 1.3 us per call, most of it locking).
struct RandomPool {
  static constexpr size_t kIdBytes = 10;
  static constexpr size_t kSize = 256 * kIdBytes;
  uint64_t generation = ~uint64_t{0};
  size_t used = kSize;
  std::string bytes;
};

}  // namespace

void NewEventIdInto(std::string* out) { NewEventIdInto(out, absl::Now()); }

void NewEventIdInto(std::string* out, absl::Time now) {
  thread_local RandomPool pool;
  const uint64_t generation = ForkGeneration();
  if (pool.generation != generation || pool.used + RandomPool::kIdBytes > RandomPool::kSize) {
    auto bytes = crypto::RandomBytes(RandomPool::kSize);
    if (!bytes.ok()) {
      static std::atomic<uint64_t> counter{0};
      // The real clock here, not the caller's time: this id's uniqueness rests on it.
      *out = absl::StrCat(absl::Hex(absl::ToUnixNanos(absl::Now()), absl::kZeroPad16),
                          absl::Hex(counter.fetch_add(1), absl::kZeroPad16));
      return;
    }
    pool.bytes = std::move(*bytes);
    pool.used = 0;
    pool.generation = generation;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  // 48-bit Unix milliseconds, then 80 random bits (the UUIDv7 idea): ids made close
  // in time sort close together, so the store's unique event_id index grows at its
  // right edge instead of dirtying a random page per event.
  std::string& id = *out;
  id.assign(32, '0');
  auto ms = static_cast<uint64_t>(absl::ToUnixMillis(now));
  for (int i = 11; i >= 0; --i, ms >>= 4) id[i] = kHex[ms & 0xf];
  crypto::HexEncodeInto(absl::string_view(pool.bytes).substr(pool.used, RandomPool::kIdBytes),
                        &id[12]);
  // Never hand out the same bytes twice.
  std::fill_n(pool.bytes.begin() + static_cast<std::ptrdiff_t>(pool.used), RandomPool::kIdBytes,
              '\0');
  pool.used += RandomPool::kIdBytes;
}

void NewEventIdForTime(std::string* out, int64_t seconds, int32_t nanos) {
  constexpr int64_t kLastSecondOf9999 = 253402300799;
  NewEventIdInto(out, seconds >= 0 && seconds <= kLastSecondOf9999
                          ? absl::FromUnixSeconds(seconds) + absl::Nanoseconds(nanos)
                          : absl::Now());
}

std::string NewEventId() {
  std::string id;
  NewEventIdInto(&id);
  return id;
}

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* ts) { ToProtoTimestamp(t, ts); }

absl::Time FromTimestamp(const google::protobuf::Timestamp& ts) { return FromProtoTimestamp(ts); }

bool ValidEventTime(const google::protobuf::Timestamp& ts) {
  // 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, the Timestamp range.
  constexpr int64_t kMinSeconds = -62135596800;
  constexpr int64_t kMaxSeconds = 253402300799;
  return ValidTimestampNanos(ts.nanos()) && ts.seconds() >= kMinSeconds &&
         ts.seconds() <= kMaxSeconds;
}

void FixEventTimes(const Clock& clock, absl::Duration max_ahead,
                   iotauth::audit::v1::AuditEvent* event) {
  bool valid_time = event->has_time() && ValidEventTime(event->time());
  absl::Time now = absl::InfinitePast();
  if (valid_time && max_ahead != absl::InfiniteDuration()) {
    // A time far ahead would sort after everything else and hold back age retention.
    now = clock.Now();
    valid_time = FromTimestamp(event->time()) <= now + max_ahead;
  }
  if (!valid_time) {
    if (event->has_time()) (*event->mutable_attributes())["invalid_time_replaced"] = "true";
    SetTimestamp(now == absl::InfinitePast() ? clock.Now() : now, event->mutable_time());
  }
  if (event->has_duration()) {
    // Durations here are elapsed times: non-negative, at most 10,000 years.
    const auto& d = event->duration();
    constexpr int64_t kMaxDurationSeconds = 315576000000;
    if (d.seconds() < 0 || d.seconds() > kMaxDurationSeconds || d.nanos() < 0 ||
        d.nanos() > 999999999) {
      event->clear_duration();
      (*event->mutable_attributes())["invalid_duration_dropped"] = "true";
    }
  }
}

void PrepareForRecord(const Clock& clock, iotauth::audit::v1::AuditEvent* event) {
  // An invalid timestamp would make the store reject the whole batch (and, in split
  // mode, the resend loop retry it forever): replace it with the current time.
  FixEventTimes(clock, absl::InfiniteDuration(), event);
  // Into the event's own string: a reused event keeps its storage. The event's own
  // time for the id saves reading the clock again.
  if (event->event_id().empty()) {
    NewEventIdForTime(event->mutable_event_id(), event->time().seconds(), event->time().nanos());
  }
  event->clear_sequence();
  event->clear_prev_hash();
  event->clear_hash();
  event->clear_encoding();  // the store writes the current version
  CapEventFields(event);
}

bool CapEventFields(iotauth::audit::v1::AuditEvent* event) {
  using iotauth::audit::v1::AuditEvent;
  // Each string field but event_id: its reader and its mutable accessor.
  struct Field {
    const std::string& (AuditEvent::*get)() const;
    std::string* (AuditEvent::*mut)();
  };
  static constexpr Field kFields[] = {
      {&AuditEvent::tenant_id, &AuditEvent::mutable_tenant_id},
      {&AuditEvent::product_key, &AuditEvent::mutable_product_key},
      {&AuditEvent::device_id, &AuditEvent::mutable_device_id},
      {&AuditEvent::reason, &AuditEvent::mutable_reason},
      {&AuditEvent::credential_type, &AuditEvent::mutable_credential_type},
      {&AuditEvent::credential_fingerprint, &AuditEvent::mutable_credential_fingerprint},
      {&AuditEvent::caller, &AuditEvent::mutable_caller},
      {&AuditEvent::peer_address, &AuditEvent::mutable_peer_address},
      {&AuditEvent::request_id, &AuditEvent::mutable_request_id},
  };
  bool cut = false;
  // The common case (nothing long) reads each size once and writes nothing.
  for (const Field& f : kFields) {
    if ((event->*f.get)().size() <= kMaxAuditFieldBytes) continue;
    std::string* value = (event->*f.mut)();
    value->resize(TruncateUtf8(*value, kMaxAuditFieldBytes).size());
    cut = true;
  }
  bool long_attribute = event->attributes().size() > kMaxAuditAttributes;
  for (const auto& [k, v] : event->attributes()) {
    if (k.size() > kMaxAuditFieldBytes || v.size() > kMaxAuditFieldBytes) long_attribute = true;
  }
  if (long_attribute) {
    // In key order (a protobuf map has none of its own), so the same event keeps the
    // same attributes wherever it is capped.
    std::vector<std::pair<absl::string_view, absl::string_view>> sorted;
    sorted.reserve(event->attributes().size());
    for (const auto& [k, v] : event->attributes()) sorted.emplace_back(k, v);
    std::sort(sorted.begin(), sorted.end());
    google::protobuf::Map<std::string, std::string> capped;
    for (const auto& [k, v] : sorted) {
      if (capped.size() >= kMaxAuditAttributes) break;
      // Two keys equal after the cut keep the first in key order.
      capped.insert({std::string(TruncateUtf8(k, kMaxAuditFieldBytes)),
                     std::string(TruncateUtf8(v, kMaxAuditFieldBytes))});
    }
    *event->mutable_attributes() = std::move(capped);
    cut = true;
  }
  if (cut) (*event->mutable_attributes())["truncated"] = "true";
  return cut;
}

}  // namespace iotauth::audit
