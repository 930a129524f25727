// Canonical encodings of an AuditEvent and the hash chain over them. The encoding
// is the tamper-evidence contract: it is written out by hand (not protobuf
// serialization, whose byte output is not guaranteed stable) and a version, once
// written, never changes; a new layout gets a new version tag. Every version stays
// readable and verifiable: a log written before an upgrade keeps verifying, and its
// chain continues in the new version (an event's hash covers the version it was
// written in, which its tag names).
//
// Version 2 (written since 2026-11-27; all integers big-endian):
//   "iaudit/2"                      8 bytes, the tag
//   u64 sequence                    at offset 8 (kCanonicalV2SequenceOffset)
//   prev_hash                       the 32 raw bytes, at offset 16
//   u8 flags                        bit 0: time set, bit 1: duration set; no others
//   time                            if set: i64 seconds, i32 nanos
//   i32 type, i32 outcome
//   duration                        if set: i64 seconds, i32 nanos
//   event_id, tenant_id, product_key, device_id, reason, credential_type,
//   credential_fingerprint, caller, peer_address, request_id:
//                                   each a varint length, then the bytes
//   varint n, then the n attributes sorted by key bytes, keys distinct, each
//                                   varint key length, key, varint value length, value
//   u8 0xA5                         the end marker
// Varints are unsigned LEB128 in their shortest form, at most 2^32 - 1. The end
// marker means a complete encoding never ends in a zero byte (torn-write recovery
// relies on it). Chain: hash = SHA-256(encoding); the encoding holds prev_hash.
// A typical Authenticate event is ~210 bytes: four SHA-256 blocks, where version
// 1 took seven.
//
// Version 1 (written until 2026-11-27; all integers big-endian):
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

#include <array>
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

inline constexpr uint32_t kEncodingV1 = 1;
inline constexpr uint32_t kEncodingV2 = 2;
// What new events are written in.
inline constexpr uint32_t kCurrentEncoding = kEncodingV2;

// The version `event` is encoded in: its `encoding` field, 0 meaning
// kCurrentEncoding. (Any other value than 0, 1 or 2 encodes as version 2;
// ComputeEventHash refuses it.)
uint32_t EncodingOf(const iotauth::audit::v1::AuditEvent& event);

// The canonical bytes of `event` (every field except `hash` and `encoding`) in
// EncodingOf(event). Deterministic: depends only on field values, never on map
// iteration order or unknown fields. Version 2 holds prev_hash raw: one that is not
// 64 lowercase hex digits encodes as 32 zero bytes (such an event cannot be
// chained: ComputeEventHash refuses it).
std::string CanonicalEncoding(const iotauth::audit::v1::AuditEvent& event);

// Lowercase hex of the event's chain hash in EncodingOf(event) (see above).
// INVALID_ARGUMENT when `event.prev_hash` is not 64 lowercase hex digits or the
// encoding is unknown.
absl::StatusOr<std::string> ComputeEventHash(const iotauth::audit::v1::AuditEvent& event);

// Sets `event->prev_hash = prev_hash`, `encoding` to EncodingOf(*event) and
// `event->hash` from ComputeEventHash.
absl::Status ChainEvent(absl::string_view prev_hash, iotauth::audit::v1::AuditEvent* event);

// Appends CanonicalEncoding(event) to `*out` (no temporary: the log store encodes
// straight into its write buffer).
void AppendCanonicalEncoding(const iotauth::audit::v1::AuditEvent& event, std::string* out);

// Unchained encodings: the producer encodes an event before it has a place in the
// chain, with sequence 0 and prev_hash kGenesisHash as placeholders; the store then
// fills both in place (the layout does not move: both are fixed-size, at fixed
// offsets in version 2; in version 1 field 1 is fixed-size and field 17 is last,
// 64 bytes). This keeps the encoding off the writer's thread.
//
// Version 1: offset of field 1's 8-byte payload, after the tag and field 1's header.
inline constexpr size_t kCanonicalSequenceOffset = 29 + 8;
// Version 2: offsets of the sequence and of the raw prev_hash.
inline constexpr size_t kCanonicalV2SequenceOffset = 8;
inline constexpr size_t kCanonicalV2PrevHashOffset = 16;

// Appends the canonical encoding of `event`, in EncodingOf(event), with sequence 0
// and prev_hash kGenesisHash in place of its own.
void AppendUnchainedEncoding(const iotauth::audit::v1::AuditEvent& event, std::string* out);

// The same encoding written at the start of `*scratch`, which only ever grows (a
// reused scratch string is neither cleared nor zero-filled again); the result
// points into it.
absl::string_view EncodeUnchainedInto(const iotauth::audit::v1::AuditEvent& event,
                                      std::string* scratch);
// The same for the event `event` describes, in kCurrentEncoding: byte for byte what
// EncodeUnchainedInto(ToAuditEvent(event)) gives (one encoder template serves both).
absl::string_view EncodeUnchainedInto(const EventView& event, std::string* scratch);

// True when `bytes` is long enough for the layout ChainUnchainedEncoding patches:
// version 2's tag and room for the sequence and prev_hash; or version 1's tag,
// field 1 with an 8-byte payload first and field 17 with a 64-byte payload last.
// (The rest is ParseCanonical's to check.)
bool IsUnchainedEncoding(absl::string_view bytes);

// Writes `sequence` and `prev_hash_raw` (32 bytes; lowercase hex in version 1) into
// the `size` bytes at `bytes`, an encoding IsUnchainedEncoding accepts.
void ChainUnchainedEncoding(uint64_t sequence, absl::string_view prev_hash_raw, char* bytes,
                            size_t size);

// The chain hash of `bytes`, a chained encoding that IsUnchainedEncoding accepts,
// whose raw prev_hash is `prev_hash_raw` (32 bytes): SHA-256(bytes) in version 2,
// SHA-256(prev_hash_raw || bytes) in version 1. False only if OpenSSL fails.
bool HashChainedEncoding(absl::string_view bytes, absl::string_view prev_hash_raw,
                         unsigned char* out);

// The fields of a canonical encoding, as views into the encoded bytes.
// `attributes`: in version 1 field 16's payload (the EncodeAttributes form); in
// version 2 the entries after the count.
struct CanonicalFields {
  uint32_t version = 0;  // kEncodingV1 or kEncodingV2
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
  uint32_t attribute_count = 0;  // version 2
  // prev_hash as stored: 64 hex digits in version 1 (whatever the bytes hold), the
  // 32 raw bytes in version 2.
  absl::string_view prev_hash_stored;
  // The raw prev_hash; `prev_hash_ok` false when version 1's is not 64 lowercase
  // hex digits (then `prev_hash_raw` is all zeros).
  std::array<char, 32> prev_hash_raw{};
  bool prev_hash_ok = false;

  absl::string_view prev_hash_raw_view() const {
    return absl::string_view(prev_hash_raw.data(), prev_hash_raw.size());
  }
};

// Parses a canonical encoding of either version (the exact layout above, nothing
// after it). False when `bytes` is not one: an unknown tag, a field out of order, a
// length past the end, a fixed-size payload of the wrong size; in version 2 also a
// varint not in its shortest form, unknown flags, attributes out of order or
// repeated, a wrong end marker. Never reads out of bounds (fuzzed: canonical_fuzz).
bool ParseCanonical(absl::string_view bytes, CanonicalFields* out);

// The chain hash of `bytes`, which ParseCanonical parsed into `fields`. False when
// version 1's prev_hash is malformed (or OpenSSL fails).
bool HashCanonical(absl::string_view bytes, const CanonicalFields& fields, unsigned char* out);

// The event `fields` describe (`hash` left empty, `encoding` set to the version).
// False when the attributes payload is malformed; the other fields are set anyway.
bool CanonicalFieldsToEvent(const CanonicalFields& fields, iotauth::audit::v1::AuditEvent* event);

// The attributes map as the canonical encoding's field 16 payload: entries sorted
// by key bytes, each u32 key_length, key, u32 value_length, value. The SQLite
// store keeps this same form in its `attributes` column.
std::string EncodeAttributes(const google::protobuf::Map<std::string, std::string>& attributes);

// True when `hex` is a 64-digit lowercase hex string (the form every stored hash has).
bool IsWellFormedHash(absl::string_view hex);

}  // namespace iotauth::audit
