#include "services/audit/canonical.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "services/common/crypto.h"
#include "services/common/status_macros.h"

namespace iotauth::audit {
namespace {

using iotauth::audit::v1::AuditEvent;

constexpr absl::string_view kDomainTag = "iotauth.audit.v1.AuditEvent/1";

void PutU32(uint32_t v, std::string* out) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out->append(b, 4);
}

void PutU64(uint64_t v, std::string* out) {
  PutU32(static_cast<uint32_t>(v >> 32), out);
  PutU32(static_cast<uint32_t>(v), out);
}

void PutField(uint32_t number, absl::string_view payload, std::string* out) {
  PutU32(number, out);
  PutU32(static_cast<uint32_t>(payload.size()), out);
  out->append(payload.data(), payload.size());
}

void PutUint64Field(uint32_t number, uint64_t v, std::string* out) {
  std::string p;
  PutU64(v, &p);
  PutField(number, p, out);
}

void PutEnumField(uint32_t number, int32_t v, std::string* out) {
  std::string p;
  PutU32(static_cast<uint32_t>(v), &p);
  PutField(number, p, out);
}

// Timestamp and Duration share the (seconds, nanos) shape.
template <typename T>
void PutTimeField(uint32_t number, bool present, const T& t, std::string* out) {
  std::string p;
  if (present) {
    PutU64(static_cast<uint64_t>(t.seconds()), &p);
    PutU32(static_cast<uint32_t>(t.nanos()), &p);
  }
  PutField(number, p, out);
}

// Value of a lowercase hex digit (callers check IsWellFormedHash first).
unsigned HexValue(char c) {
  return c >= 'a' ? static_cast<unsigned>(c - 'a' + 10) : static_cast<unsigned>(c - '0');
}

// Appends the canonical encoding of `e` to `*out`.
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
  {
    std::vector<std::pair<absl::string_view, absl::string_view>> entries;
    entries.reserve(e.attributes().size());
    for (const auto& [k, v] : e.attributes()) entries.emplace_back(k, v);
    std::sort(entries.begin(), entries.end());  // string_view compares bytes
    std::string p;
    for (const auto& [k, v] : entries) {
      PutU32(static_cast<uint32_t>(k.size()), &p);
      p.append(k.data(), k.size());
      PutU32(static_cast<uint32_t>(v.size()), &p);
      p.append(v.data(), v.size());
    }
    PutField(16, p, &out);
  }
  PutField(17, e.prev_hash(), &out);
}

}  // namespace

std::string CanonicalEncoding(const AuditEvent& e) {
  std::string out;
  out.reserve(512);
  AppendCanonical(e, &out);
  return out;
}

bool IsWellFormedHash(absl::string_view hex) {
  return hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

absl::StatusOr<std::string> ComputeEventHash(const AuditEvent& event) {
  if (!IsWellFormedHash(event.prev_hash())) {
    return absl::InvalidArgumentError("prev_hash is not 64 lowercase hex digits");
  }
  // One buffer: raw(prev_hash) then the canonical encoding (this runs once per
  // committed event and once per verified event).
  std::string buf;
  buf.reserve(512);
  const std::string& prev = event.prev_hash();
  for (size_t i = 0; i < prev.size(); i += 2) {
    buf.push_back(static_cast<char>((HexValue(prev[i]) << 4U) | HexValue(prev[i + 1])));
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
