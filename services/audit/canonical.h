// Canonical encoding of an AuditEvent and the hash chain over it. The encoding is
// the tamper-evidence contract: it is written out by hand (not protobuf
// serialization, whose byte output is not guaranteed stable) and must never change
// for version 1; a new layout gets a new version tag.
//
// Layout, version 1 (all integers big-endian):
//   "iotauth.audit.v1.AuditEvent/1" (29 bytes, no terminator)
//   then for each field number 1..17 in increasing order (every field except
//   `hash` = 18, present even when it holds its default value):
//     u32 field_number, u32 payload_length, payload
//   payloads:
//     uint64 (sequence)            8 bytes
//     enum (type, outcome)         4 bytes, the int32 value two's complement
//     string fields                the raw bytes
//     Timestamp / Duration         empty when unset, else i64 seconds + i32 nanos
//     map (attributes)             entries sorted by key bytes, each
//                                  u32 key_length, key, u32 value_length, value
// Chain: hash = SHA-256(raw(prev_hash) || canonical), where raw(prev_hash) is the
// 32 bytes that the lowercase hex `prev_hash` encodes; the first event's prev_hash
// is kGenesisHash (64 zeros). `prev_hash` is itself also part of the canonical
// encoding, so the hash commits to it twice; harmless and simple to check.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/iotauth/audit/v1/audit.pb.h"

namespace iotauth::audit {

// prev_hash of the first event ever written (sequence 1).
inline constexpr absl::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// The canonical bytes of `event` (every field except `hash`). Deterministic:
// depends only on field values, never on map iteration order or unknown fields.
std::string CanonicalEncoding(const iotauth::audit::v1::AuditEvent& event);

// Lowercase hex SHA-256(raw(event.prev_hash) || CanonicalEncoding(event)).
// INVALID_ARGUMENT when `event.prev_hash` is not 64 hex digits.
absl::StatusOr<std::string> ComputeEventHash(const iotauth::audit::v1::AuditEvent& event);

// Sets `event->prev_hash = prev_hash` and `event->hash` from ComputeEventHash.
absl::Status ChainEvent(absl::string_view prev_hash, iotauth::audit::v1::AuditEvent* event);

// The attributes map as the canonical encoding's field 16 payload: entries sorted
// by key bytes, each u32 key_length, key, u32 value_length, value. The SQLite
// store keeps this same form in its `attributes` column.
std::string EncodeAttributes(const google::protobuf::Map<std::string, std::string>& attributes);

// True when `hex` is a 64-digit lowercase hex string (the form every stored hash has).
bool IsWellFormedHash(absl::string_view hex);

}  // namespace iotauth::audit
