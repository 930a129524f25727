#include "services/audit/canonical.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "services/common/big_endian.h"
#include "services/common/crypto.h"
#include "services/common/status_macros.h"

namespace iotauth::audit {
namespace {

using big_endian::LoadU32;
using big_endian::LoadU64;
using iotauth::audit::v1::AuditEvent;

constexpr absl::string_view kDomainTag = "iotauth.audit.v1.AuditEvent/1";

// The encoder sizes the whole encoding first, grows the buffer once and writes
// through a cursor: it runs on every audited request, and one append per field
// header cost more than the bytes themselves.
constexpr size_t kHeaderBytes = 8;
constexpr size_t kTimeBytes = 12;  // u64 seconds, u32 nanos

class Cursor {
 public:
  explicit Cursor(char* p) : p_(p) {}
  void U32(uint32_t v) {
    big_endian::StoreU32(v, p_);
    p_ += 4;
  }
  void U64(uint64_t v) {
    big_endian::StoreU64(v, p_);
    p_ += 8;
  }
  void Bytes(absl::string_view b) {
    if (!b.empty()) std::memcpy(p_, b.data(), b.size());
    p_ += b.size();
  }
  void Header(uint32_t number, size_t payload_size) {
    U32(number);
    U32(static_cast<uint32_t>(payload_size));
  }
  void Field(uint32_t number, absl::string_view payload) {
    Header(number, payload.size());
    Bytes(payload);
  }
  // Timestamp and Duration share the (seconds, nanos) shape.
  template <typename T>
  void Time(uint32_t number, bool present, const T& t) {
    if (!present) {
      Header(number, 0);
      return;
    }
    Header(number, kTimeBytes);
    U64(static_cast<uint64_t>(t.seconds()));
    U32(static_cast<uint32_t>(t.nanos()));
  }
  char* position() const { return p_; }

 private:
  char* p_;
};

using Attributes = google::protobuf::Map<std::string, std::string>;
struct Entry {
  absl::string_view key;
  absl::string_view value;
  size_t order;  // position in the source: the first of a repeated key wins
};
using Entries = absl::InlinedVector<Entry, 4>;

// The attribute entries in encoding order: sorted by key bytes, a repeated key
// (possible in an EventView, never in a map) keeping its first value. std::sort on
// (key, order) rather than std::stable_sort, which allocates a buffer per call.
template <typename Container>
Entries SortedEntries(const Container& m) {
  Entries entries;
  for (const auto& [k, v] : m) entries.push_back({k, v, entries.size()});
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.key < b.key || (a.key == b.key && a.order < b.order);
  });
  entries.erase(std::unique(entries.begin(), entries.end(),
                            [](const Entry& a, const Entry& b) { return a.key == b.key; }),
                entries.end());
  return entries;
}

// Bytes WriteAttributeEntries writes for `entries`.
size_t AttributeEntriesSize(const Entries& entries) {
  size_t size = 0;
  for (const Entry& e : entries) size += 8 + e.key.size() + e.value.size();
  return size;
}

// Each entry as u32 key_length, key, u32 value_length, value.
void WriteAttributeEntries(const Entries& entries, Cursor* out) {
  for (const Entry& e : entries) {
    out->U32(static_cast<uint32_t>(e.key.size()));
    out->Bytes(e.key);
    out->U32(static_cast<uint32_t>(e.value.size()));
    out->Bytes(e.value);
  }
}

// An EventView behind AuditEvent's accessors: one encoder template serves both,
// so the two can never encode the same event differently.
class ViewAccess {
 public:
  struct Time {
    int64_t s;
    int32_t n;
    int64_t seconds() const { return s; }
    int32_t nanos() const { return n; }
  };
  explicit ViewAccess(const EventView& v) : v_(v) {}
  absl::string_view event_id() const { return v_.event_id; }
  bool has_time() const { return v_.has_time; }
  Time time() const { return {v_.time.seconds, v_.time.nanos}; }
  int32_t type() const { return v_.type; }
  absl::string_view tenant_id() const { return v_.tenant_id; }
  absl::string_view product_key() const { return v_.product_key; }
  absl::string_view device_id() const { return v_.device_id; }
  int32_t outcome() const { return v_.outcome; }
  absl::string_view reason() const { return v_.reason; }
  absl::string_view credential_type() const { return v_.credential_type; }
  absl::string_view credential_fingerprint() const { return v_.credential_fingerprint; }
  absl::string_view caller() const { return v_.caller; }
  absl::string_view peer_address() const { return v_.peer_address; }
  absl::string_view request_id() const { return v_.request_id; }
  bool has_duration() const { return v_.has_duration; }
  Time duration() const { return {v_.duration.seconds, v_.duration.nanos}; }
  absl::Span<const EventView::Attribute> attributes() const { return v_.attributes; }

 private:
  const EventView& v_;
};

// Grows `*out` by `size` bytes and returns where the new bytes start.
char* Grow(size_t size, std::string* out) {
  const size_t at = out->size();
  out->resize(at + size);
  return out->data() + at;
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

// One event's encoding measured before it is written: its attribute entries in
// encoding order, their bytes, and the whole encoding's bytes.
struct Layout {
  Entries entries;
  size_t attributes = 0;
  size_t size = 0;
};

// The Layout of the canonical encoding of `e` (an AuditEvent or a ViewAccess) with
// a `prev_hash_size`-byte prev_hash.
template <typename E>
Layout Measure(const E& e, size_t prev_hash_size) {
  Layout l;
  l.entries = SortedEntries(e.attributes());
  l.attributes = AttributeEntriesSize(l.entries);
  l.size = kDomainTag.size() + 17 * kHeaderBytes + 8 + e.event_id().size() +
           (e.has_time() ? kTimeBytes : 0) + 4 + e.tenant_id().size() + e.product_key().size() +
           e.device_id().size() + 4 + e.reason().size() + e.credential_type().size() +
           e.credential_fingerprint().size() + e.caller().size() + e.peer_address().size() +
           e.request_id().size() + (e.has_duration() ? kTimeBytes : 0) + l.attributes +
           prev_hash_size;
  return l;
}

// Writes the canonical encoding of `e`, with `sequence` and `prev_hash` in place of
// the event's own, at `out`, which has room for the `layout.size` bytes Measure
// gave; returns the end of what it wrote.
template <typename E>
char* WriteCanonicalWith(const E& e, const Layout& layout, uint64_t sequence,
                         absl::string_view prev_hash, char* out) {
  Cursor c(out);
  c.Bytes(kDomainTag);
  c.Header(1, 8);
  c.U64(sequence);
  c.Field(2, e.event_id());
  c.Time(3, e.has_time(), e.time());
  c.Header(4, 4);
  c.U32(static_cast<uint32_t>(e.type()));
  c.Field(5, e.tenant_id());
  c.Field(6, e.product_key());
  c.Field(7, e.device_id());
  c.Header(8, 4);
  c.U32(static_cast<uint32_t>(e.outcome()));
  c.Field(9, e.reason());
  c.Field(10, e.credential_type());
  c.Field(11, e.credential_fingerprint());
  c.Field(12, e.caller());
  c.Field(13, e.peer_address());
  c.Field(14, e.request_id());
  c.Time(15, e.has_duration(), e.duration());
  c.Header(16, layout.attributes);
  WriteAttributeEntries(layout.entries, &c);
  c.Field(17, prev_hash);
  return c.position();
}

// Appends the canonical encoding of `e`, with `sequence` and `prev_hash` in place
// of the event's own, to `*out`.
void AppendCanonicalWith(const AuditEvent& e, uint64_t sequence, absl::string_view prev_hash,
                         std::string* out) {
  const Layout layout = Measure(e, prev_hash.size());
  char* const start = Grow(layout.size, out);
  [[maybe_unused]] const char* const end =
      WriteCanonicalWith(e, layout, sequence, prev_hash, start);
  assert(end == start + layout.size);
}

// Appends the canonical encoding of `e` to `*out_ptr`.
void AppendCanonical(const AuditEvent& e, std::string* out_ptr) {
  AppendCanonicalWith(e, e.sequence(), e.prev_hash(), out_ptr);
}

// Reads the next field header, which must carry `number`; `*payload` is its bytes.
bool NextField(absl::string_view* in, uint32_t number, absl::string_view* payload) {
  if (in->size() < 8 || LoadU32(in->data()) != number) return false;
  const uint32_t n = LoadU32(in->data() + 4);
  if (in->size() - 8 < n) return false;
  *payload = in->substr(8, n);
  in->remove_prefix(8 + static_cast<size_t>(n));
  return true;
}

bool NextTime(absl::string_view* in, uint32_t number, bool* present, int64_t* seconds,
              int32_t* nanos) {
  absl::string_view p;
  if (!NextField(in, number, &p)) return false;
  if (p.empty()) {
    *present = false;
    return true;
  }
  if (p.size() != 12) return false;
  *present = true;
  *seconds = static_cast<int64_t>(LoadU64(p.data()));
  *nanos = static_cast<int32_t>(LoadU32(p.data() + 8));
  return true;
}

bool NextInt32(absl::string_view* in, uint32_t number, int32_t* v) {
  absl::string_view p;
  if (!NextField(in, number, &p) || p.size() != 4) return false;
  *v = static_cast<int32_t>(LoadU32(p.data()));
  return true;
}

}  // namespace

void AppendCanonicalEncoding(const AuditEvent& event, std::string* out) {
  AppendCanonical(event, out);
}

bool ParseCanonical(absl::string_view bytes, CanonicalFields* out) {
  absl::string_view in = bytes;
  CanonicalFields* const f = out;
  if (in.substr(0, kDomainTag.size()) != kDomainTag) return false;
  in.remove_prefix(kDomainTag.size());
  absl::string_view p;
  if (!NextField(&in, 1, &p) || p.size() != 8) return false;
  f->sequence = LoadU64(p.data());
  if (!NextField(&in, 2, &f->event_id)) return false;
  if (!NextTime(&in, 3, &f->has_time, &f->time_seconds, &f->time_nanos)) return false;
  if (!NextInt32(&in, 4, &f->type)) return false;
  if (!NextField(&in, 5, &f->tenant_id) || !NextField(&in, 6, &f->product_key) ||
      !NextField(&in, 7, &f->device_id)) {
    return false;
  }
  if (!NextInt32(&in, 8, &f->outcome)) return false;
  if (!NextField(&in, 9, &f->reason) || !NextField(&in, 10, &f->credential_type) ||
      !NextField(&in, 11, &f->credential_fingerprint) || !NextField(&in, 12, &f->caller) ||
      !NextField(&in, 13, &f->peer_address) || !NextField(&in, 14, &f->request_id)) {
    return false;
  }
  if (!NextTime(&in, 15, &f->has_duration, &f->duration_seconds, &f->duration_nanos)) {
    return false;
  }
  if (!NextField(&in, 16, &f->attributes) || !NextField(&in, 17, &f->prev_hash)) return false;
  return in.empty();
}

bool CanonicalFieldsToEvent(const CanonicalFields& fields, AuditEvent* event) {
  const CanonicalFields& f = fields;
  AuditEvent* const e = event;
  e->set_sequence(f.sequence);
  e->set_event_id(std::string(f.event_id));
  if (f.has_time) {
    e->mutable_time()->set_seconds(f.time_seconds);
    e->mutable_time()->set_nanos(f.time_nanos);
  }
  e->set_type(static_cast<iotauth::audit::v1::EventType>(f.type));
  e->set_tenant_id(std::string(f.tenant_id));
  e->set_product_key(std::string(f.product_key));
  e->set_device_id(std::string(f.device_id));
  e->set_outcome(static_cast<iotauth::audit::v1::Outcome>(f.outcome));
  e->set_reason(std::string(f.reason));
  e->set_credential_type(std::string(f.credential_type));
  e->set_credential_fingerprint(std::string(f.credential_fingerprint));
  e->set_caller(std::string(f.caller));
  e->set_peer_address(std::string(f.peer_address));
  e->set_request_id(std::string(f.request_id));
  if (f.has_duration) {
    e->mutable_duration()->set_seconds(f.duration_seconds);
    e->mutable_duration()->set_nanos(f.duration_nanos);
  }
  e->set_prev_hash(std::string(f.prev_hash));
  absl::string_view in = f.attributes;
  auto* attrs = e->mutable_attributes();
  while (!in.empty()) {
    absl::string_view k;
    absl::string_view v;
    for (absl::string_view* s : {&k, &v}) {
      if (in.size() < 4) return false;
      const uint32_t n = LoadU32(in.data());
      if (in.size() - 4 < n) return false;
      *s = in.substr(4, n);
      in.remove_prefix(4 + static_cast<size_t>(n));
    }
    (*attrs)[std::string(k)] = std::string(v);
  }
  return true;
}

std::string EncodeAttributes(const Attributes& attributes) {
  std::string out;
  const Entries entries = SortedEntries(attributes);
  Cursor c(Grow(AttributeEntriesSize(entries), &out));
  WriteAttributeEntries(entries, &c);
  return out;
}

std::string CanonicalEncoding(const AuditEvent& e) {
  std::string out;
  out.reserve(512);
  AppendCanonical(e, &out);
  return out;
}

void AppendUnchainedEncoding(const AuditEvent& event, std::string* out) {
  AppendCanonicalWith(event, 0, kGenesisHash, out);
}

namespace {

template <typename E>
absl::string_view EncodeUnchainedIntoImpl(const E& event, std::string* scratch) {
  const Layout layout = Measure(event, kGenesisHash.size());
  if (scratch->size() < layout.size) scratch->resize(layout.size);
  [[maybe_unused]] const char* const end =
      WriteCanonicalWith(event, layout, 0, kGenesisHash, scratch->data());
  assert(end == scratch->data() + layout.size);
  return absl::string_view(scratch->data(), layout.size);
}

}  // namespace

absl::string_view EncodeUnchainedInto(const AuditEvent& event, std::string* scratch) {
  return EncodeUnchainedIntoImpl(event, scratch);
}

absl::string_view EncodeUnchainedInto(const EventView& event, std::string* scratch) {
  return EncodeUnchainedIntoImpl(ViewAccess(event), scratch);
}

bool IsUnchainedEncoding(absl::string_view bytes) {
  constexpr size_t kPrevHashField = 8 + kGenesisHash.size();
  if (bytes.size() < kCanonicalSequenceOffset + 8 + kPrevHashField ||
      bytes.substr(0, kDomainTag.size()) != kDomainTag) {
    return false;
  }
  const char* seq_header = bytes.data() + kDomainTag.size();
  const char* prev_header = bytes.data() + bytes.size() - kPrevHashField;
  return LoadU32(seq_header) == 1 && LoadU32(seq_header + 4) == 8 && LoadU32(prev_header) == 17 &&
         LoadU32(prev_header + 4) == kGenesisHash.size();
}

void ChainUnchainedEncoding(uint64_t sequence, absl::string_view prev_hash_raw, char* bytes,
                            size_t size) {
  big_endian::StoreU64(sequence, bytes + kCanonicalSequenceOffset);
  crypto::HexEncodeInto(prev_hash_raw.substr(0, kGenesisHash.size() / 2),
                        bytes + size - kGenesisHash.size());
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
