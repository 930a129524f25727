// Helpers shared by the audit sinks: producer-side defaults for an event.
#pragma once

#include <string>

#include "absl/time/time.h"
#include "proto/iotauth/audit/v1/audit.pb.h"
#include "services/common/clock.h"

namespace iotauth::audit {

// A unique 128-bit id as 32 lowercase hex digits: 48 bits of Unix milliseconds then
// 80 bits from the CSPRNG (buffered per thread; a forked child never repeats its
// parent's bytes). Time-ordered so the store's dedup index stays append-mostly.
// Never fails: if the CSPRNG fails it falls back to a time-and-counter id, still
// unique in the process.
std::string NewEventId();
// NewEventId into `*out` (replacing its contents; no allocation when it has room).
void NewEventIdInto(std::string* out);
// The same with `now` for the time part (the caller has just read the clock).
void NewEventIdInto(std::string* out, absl::Time now);
// The id of an event whose time is (seconds, nanos): its time part is the event's
// own time when the 48-bit millisecond field holds it (1970 to the end of 9999, the
// Timestamp range), else the clock. The time part only orders ids; uniqueness is
// the 80 random bits.
void NewEventIdForTime(std::string* out, int64_t seconds, int32_t nanos);

// True when `nanos` is a valid Timestamp nanos field (0..999,999,999).
inline bool ValidTimestampNanos(int32_t nanos) { return nanos >= 0 && nanos <= 999999999; }

// Assigns `event_id` (NewEventId) and `time` (clock.Now()) when they are empty (an
// out-of-range time is replaced too, marked by attribute `invalid_time_replaced`), and
// clears the fields that only the store may set (`sequence`, `prev_hash`, `hash`).
// Also applies CapEventFields.
void PrepareForRecord(const Clock& clock, iotauth::audit::v1::AuditEvent* event);

// Longest value an event keeps in any string field or attribute (key or value).
inline constexpr size_t kMaxAuditFieldBytes = 1024;
// Most attributes an event keeps (CapEventFields keeps the first in key order).
inline constexpr size_t kMaxAuditAttributes = 64;
// Longest event_id accepted from another service (ours are 32 characters).
inline constexpr size_t kMaxEventIdBytes = 128;

// True when `ts` is a Timestamp a log keeps: valid nanos, years 0001 to 9999.
bool ValidEventTime(const google::protobuf::Timestamp& ts);
// Replaces an event's missing or invalid time, or one more than `max_ahead` past
// `clock.Now()` (the clock is read only for that check when `max_ahead` is finite),
// with the current time (attribute `invalid_time_replaced` when it had one), and
// drops an invalid or negative duration (attribute `invalid_duration_dropped`).
void FixEventTimes(const Clock& clock, absl::Duration max_ahead,
                   iotauth::audit::v1::AuditEvent* event);

// Keeps the first kMaxAuditAttributes attributes (in key order), and cuts every
// string field except event_id, and every attribute key and value, to
// kMaxAuditFieldBytes (at a UTF-8 boundary) and marks a cut event with attribute
// `truncated` = "true". Request fields reach events even when the request is refused
// (an unauthenticated caller's ids, a device's client id): their size must not decide
// the size of the permanent log. True when something was cut.
bool CapEventFields(iotauth::audit::v1::AuditEvent* event);

// Timestamp conversions.
void SetTimestamp(absl::Time t, google::protobuf::Timestamp* ts);
absl::Time FromTimestamp(const google::protobuf::Timestamp& ts);

}  // namespace iotauth::audit
