#include "services/audit/canonical.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "services/common/crypto.h"
#include "services/common/status_macros.h"

namespace iotauth::audit {
namespace {

using iotauth::audit::v1::AuditEvent;

constexpr absl::string_view kDomainTag = "iotauth.audit.v1.AuditEvent/1";

// The encoder appends straight into one buffer (no temporary per field): it
// runs once per committed event and once per verified event.
void PutU32(uint32_t v, std::string* out) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  out->append(b, 4);
}

void PutU64(uint64_t v, std::string* out) {
  PutU32(static_cast<uint32_t>(v >> 32), out);
  PutU32(static_cast<uint32_t>(v), out);
}

void PutHeader(uint32_t number, size_t payload_size, std::string* out) {
  PutU32(number, out);
  PutU32(static_cast<uint32_t>(payload_size), out);
}

void PutField(uint32_t number, absl::string_view payload, std::string* out) {
  PutHeader(number, payload.size(), out);
  out->append(payload.data(), payload.size());
}

void PutUint64Field(uint32_t number, uint64_t v, std::string* out) {
  PutHeader(number, 8, out);
  PutU64(v, out);
}

void PutEnumField(uint32_t number, int32_t v, std::string* out) {
  PutHeader(number, 4, out);
  PutU32(static_cast<uint32_t>(v), out);
}

// Timestamp and Duration share the (seconds, nanos) shape.
template <typename T>
void PutTimeField(uint32_t number, bool present, const T& t, std::string* out) {
  if (!present) {
    PutHeader(number, 0, out);
    return;
  }
  PutHeader(number, 12, out);
  PutU64(static_cast<uint64_t>(t.seconds()), out);
  PutU32(static_cast<uint32_t>(t.nanos()), out);
}

using Attributes = google::protobuf::Map<std::string, std::string>;

// Bytes AppendAttributeEntries appends for `m`.
size_t AttributeEntriesSize(const Attributes& m) {
  size_t size = 0;
  for (const auto& [k, v] : m) size += 8 + k.size() + v.size();
  return size;
}

// Map entries sorted by key bytes, each u32 key_length, key, u32 value_length, value.
void AppendAttributeEntries(const Attributes& m, std::string* out) {
  absl::InlinedVector<std::pair<absl::string_view, absl::string_view>, 4> entries;
  for (const auto& [k, v] : m) entries.emplace_back(k, v);
  std::sort(entries.begin(), entries.end());  // string_view compares bytes
  for (const auto& [k, v] : entries) {
    PutU32(static_cast<uint32_t>(k.size()), out);
    out->append(k.data(), k.size());
    PutU32(static_cast<uint32_t>(v.size()), out);
    out->append(v.data(), v.size());
  }
}

void PutAttributesField(uint32_t number, const Attributes& m, std::string* out) {
  PutHeader(number, AttributeEntriesSize(m), out);
  AppendAttributeEntries(m, out);
}

// Value of a hex digit; kNotHex for anything but 0-9 and a-f.
constexpr uint8_t kNotHex = 0xff;
constexpr std::array<uint8_t, 256> MakeHexTable() {
  std::array<uint8_t, 256> t{};
  for (auto& v : t) v = kNotHex;
  for (int c = '0'; c <= '9'; ++c) t[c] = static_cast<uint8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t[c] = static_cast<uint8_t>(c - 'a' + 10);
  return t;
}
constexpr std::array<uint8_t, 256> kHexValue = MakeHexTable();

// Appends the canonical encoding of `e` to `*out_ptr`.
void AppendCanonical(const AuditEvent& e, std::string* out_ptr) {
  std::string& out = *out_ptr;
  out.append(kDomainTag.data(), kDomainTag.size());
  PutUint64Field(1, e.sequence(), &out);
  PutField(2, e.event_id(), &out);
  PutTimeField(3, e.has_time(), e.time(), &out);
  PutEnumField(4, static_cast<int32_t>(e.type()), &out);
  PutField(5, e.tenant_id(), &out);
  PutField(6, e.product_key(), &out);
  PutField(7, e.device_id(), &out);
  PutEnumField(8, static_cast<int32_t>(e.outcome()), &out);
  PutField(9, e.reason(), &out);
  PutField(10, e.credential_type(), &out);
  PutField(11, e.credential_fingerprint(), &out);
  PutField(12, e.caller(), &out);
  PutField(13, e.peer_address(), &out);
  PutField(14, e.request_id(), &out);
  PutTimeField(15, e.has_duration(), e.duration(), &out);
  PutAttributesField(16, e.attributes(), &out);
  PutField(17, e.prev_hash(), &out);
}

}  // namespace

std::string EncodeAttributes(const Attributes& attributes) {
  std::string out;
  out.reserve(AttributeEntriesSize(attributes));
  AppendAttributeEntries(attributes, &out);
  return out;
}

std::string CanonicalEncoding(const AuditEvent& e) {
  std::string out;
  out.reserve(512);
  AppendCanonical(e, &out);
  return out;
}

bool IsWellFormedHash(absl::string_view hex) {
  if (hex.size() != 64) return false;
  uint8_t bad = 0;
  for (char c : hex) bad |= kHexValue[static_cast<unsigned char>(c)];
  return (bad & 0xf0) == 0;  // every digit is below 16
}

absl::StatusOr<std::string> ComputeEventHash(const AuditEvent& event) {
  if (!IsWellFormedHash(event.prev_hash())) {
    return absl::InvalidArgumentError("prev_hash is not 64 lowercase hex digits");
  }
  // One buffer: raw(prev_hash) then the canonical encoding.
  std::string buf;
  buf.reserve(512);
  const std::string& prev = event.prev_hash();
  for (size_t i = 0; i < prev.size(); i += 2) {
    buf.push_back(static_cast<char>((kHexValue[static_cast<unsigned char>(prev[i])] << 4U) |
                                    kHexValue[static_cast<unsigned char>(prev[i + 1])]));
  }
  AppendCanonical(event, &buf);
  return crypto::Sha256Hex(buf);
}

absl::Status ChainEvent(absl::string_view prev_hash, AuditEvent* event) {
  event->set_prev_hash(std::string(prev_hash));
  IOTAUTH_ASSIGN_OR_RETURN(std::string hash, ComputeEventHash(*event));
  event->set_hash(std::move(hash));
  return absl::OkStatus();
}

}  // namespace iotauth::audit
