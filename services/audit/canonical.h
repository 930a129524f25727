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

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/iotauth/audit/v1/audit.pb.h"
#include "services/audit/event_view.h"

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

// Appends CanonicalEncoding(event) to `*out` (no temporary: the log store encodes
// straight into its write buffer).
void AppendCanonicalEncoding(const iotauth::audit::v1::AuditEvent& event, std::string* out);

// Unchained encodings: the producer encodes an event before it has a place in the
// chain, with sequence 0 and prev_hash kGenesisHash as placeholders; the store then
// fills both in place (the layout does not move: field 1 is fixed-size and field 17
// is last, 64 bytes). This keeps the encoding off the writer's thread.
//
// Offset of field 1's 8-byte payload: after the domain tag and field 1's header.
inline constexpr size_t kCanonicalSequenceOffset = 29 + 8;

// Appends the canonical encoding of `event` with sequence 0 and prev_hash
// kGenesisHash in place of its own.
void AppendUnchainedEncoding(const iotauth::audit::v1::AuditEvent& event, std::string* out);

// The same encoding written at the start of `*scratch`, which only ever grows (a
// reused scratch string is neither cleared nor zero-filled again); the result
// points into it.
absl::string_view EncodeUnchainedInto(const iotauth::audit::v1::AuditEvent& event,
                                      std::string* scratch);
// The same for the event `event` describes: byte for byte what
// EncodeUnchainedInto(ToAuditEvent(event)) gives (one encoder template serves both).
absl::string_view EncodeUnchainedInto(const EventView& event, std::string* scratch);

// True when `bytes` has the version-1 tag, field 1 with an 8-byte payload first and
// field 17 with a 64-byte payload last: the layout ChainUnchainedEncoding patches.
// (The rest is ParseCanonical's to check.)
bool IsUnchainedEncoding(absl::string_view bytes);

// Writes `sequence` and the lowercase hex of `prev_hash_raw` (32 bytes) into the
// `size` bytes at `bytes`, an encoding IsUnchainedEncoding accepts.
void ChainUnchainedEncoding(uint64_t sequence, absl::string_view prev_hash_raw, char* bytes,
                            size_t size);

// The fields of a version-1 canonical encoding, as views into the encoded bytes.
// `attributes` is field 16's payload (the EncodeAttributes form).
struct CanonicalFields {
  uint64_t sequence = 0;
  absl::string_view event_id;
  bool has_time = false;
  int64_t time_seconds = 0;
  int32_t time_nanos = 0;
  int32_t type = 0;
  absl::string_view tenant_id;
  absl::string_view product_key;
  absl::string_view device_id;
  int32_t outcome = 0;
  absl::string_view reason;
  absl::string_view credential_type;
  absl::string_view credential_fingerprint;
  absl::string_view caller;
  absl::string_view peer_address;
  absl::string_view request_id;
  bool has_duration = false;
  int64_t duration_seconds = 0;
  int32_t duration_nanos = 0;
  absl::string_view attributes;
  absl::string_view prev_hash;
};

// Parses a version-1 canonical encoding (the exact layout above, nothing after
// it). False when `bytes` is not one: wrong tag, a field out of order, a length
// past the end, a fixed-size payload of the wrong size. Never reads out of bounds
// (fuzzed: canonical_fuzz).
bool ParseCanonical(absl::string_view bytes, CanonicalFields* out);

// The event `fields` describe (`hash` left empty). False when the attributes
// payload is malformed; the other fields are set anyway.
bool CanonicalFieldsToEvent(const CanonicalFields& fields, iotauth::audit::v1::AuditEvent* event);

// The attributes map as the canonical encoding's field 16 payload: entries sorted
// by key bytes, each u32 key_length, key, u32 value_length, value. The SQLite
// store keeps this same form in its `attributes` column.
std::string EncodeAttributes(const google::protobuf::Map<std::string, std::string>& attributes);

// True when `hex` is a 64-digit lowercase hex string (the form every stored hash has).
bool IsWellFormedHash(absl::string_view hex);

}  // namespace iotauth::audit
