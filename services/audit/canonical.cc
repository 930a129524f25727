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
constexpr absl::string_view kTagV2 = "iaudit/2";
constexpr uint8_t kFlagTime = 0x01;
constexpr uint8_t kFlagDuration = 0x02;
constexpr char kEndV2 = static_cast<char>(0xA5);
// Bytes of a version-2 encoding before its flags: tag, sequence, prev_hash.
constexpr size_t kV2FixedPrefix = 8 + 8 + 32;
static_assert(kCanonicalV2SequenceOffset == kTagV2.size());
static_assert(kCanonicalV2PrevHashOffset == kCanonicalV2SequenceOffset + 8);

// Bytes of `v` as a shortest-form unsigned LEB128 varint.
constexpr size_t VarintSize(uint32_t v) {
  return v < (1U << 7) ? 1 : v < (1U << 14) ? 2 : v < (1U << 21) ? 3 : v < (1U << 28) ? 4 : 5;
}

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
  void U8(uint8_t v) { *p_++ = static_cast<char>(v); }
  void Varint(uint32_t v) {
    while (v >= 0x80) {
      *p_++ = static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    *p_++ = static_cast<char>(v);
  }
  // A version-2 string: varint length, bytes.
  void Str(absl::string_view s) {
    if (s.size() < 0x80) {
      *p_++ = static_cast<char>(s.size());
    } else {
      Varint(static_cast<uint32_t>(s.size()));
    }
    Bytes(s);
  }
  // Seconds and nanos, no header (version 2).
  template <typename T>
  void RawTime(const T& t) {
    U64(static_cast<uint64_t>(t.seconds()));
    U32(static_cast<uint32_t>(t.nanos()));
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
  // A view is always encoded in the current version.
  static uint32_t encoding() { return 0; }

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

// Version 2.

size_t StrSize(absl::string_view s) {
  return VarintSize(static_cast<uint32_t>(s.size())) + s.size();
}

// The Layout of the version-2 encoding of `e`.
template <typename E>
Layout MeasureV2(const E& e) {
  Layout l;
  l.entries = SortedEntries(e.attributes());
  for (const Entry& x : l.entries) l.attributes += StrSize(x.key) + StrSize(x.value);
  l.size = kV2FixedPrefix + 1 + (e.has_time() ? kTimeBytes : 0) + 8 +
           (e.has_duration() ? kTimeBytes : 0) + StrSize(e.event_id()) + StrSize(e.tenant_id()) +
           StrSize(e.product_key()) + StrSize(e.device_id()) + StrSize(e.reason()) +
           StrSize(e.credential_type()) + StrSize(e.credential_fingerprint()) +
           StrSize(e.caller()) + StrSize(e.peer_address()) + StrSize(e.request_id()) +
           VarintSize(static_cast<uint32_t>(l.entries.size())) + l.attributes + 1;
  return l;
}

// Writes the version-2 encoding of `e`, with `sequence` and `prev_hash_raw` (32
// bytes) in place of the event's own, at `out`, which has room for `layout.size`
// bytes; returns the end of what it wrote.
template <typename E>
char* WriteV2(const E& e, const Layout& layout, uint64_t sequence, absl::string_view prev_hash_raw,
              char* out) {
  Cursor c(out);
  c.Bytes(kTagV2);
  c.U64(sequence);
  c.Bytes(prev_hash_raw.substr(0, 32));
  c.U8(static_cast<uint8_t>((e.has_time() ? kFlagTime : 0) |
                            (e.has_duration() ? kFlagDuration : 0)));
  if (e.has_time()) c.RawTime(e.time());
  c.U32(static_cast<uint32_t>(e.type()));
  c.U32(static_cast<uint32_t>(e.outcome()));
  if (e.has_duration()) c.RawTime(e.duration());
  c.Str(e.event_id());
  c.Str(e.tenant_id());
  c.Str(e.product_key());
  c.Str(e.device_id());
  c.Str(e.reason());
  c.Str(e.credential_type());
  c.Str(e.credential_fingerprint());
  c.Str(e.caller());
  c.Str(e.peer_address());
  c.Str(e.request_id());
  c.Varint(static_cast<uint32_t>(layout.entries.size()));
  for (const Entry& x : layout.entries) {
    c.Str(x.key);
    c.Str(x.value);
  }
  c.U8(static_cast<uint8_t>(kEndV2));
  return c.position();
}

// The 32 raw bytes a 64-digit lowercase hex hash encodes; zeros when it is not one.
std::array<char, 32> RawHash(absl::string_view hex) {
  std::array<char, 32> raw{};
  if (!IsWellFormedHash(hex)) return raw;
  for (size_t i = 0; i < raw.size(); ++i) {
    raw[i] = static_cast<char>((kHexValue[static_cast<unsigned char>(hex[2 * i])] << 4U) |
                               kHexValue[static_cast<unsigned char>(hex[2 * i + 1])]);
  }
  return raw;
}

absl::string_view View(const std::array<char, 32>& a) { return {a.data(), a.size()}; }

// Encodes `e` in `version`, with `sequence` and the prev_hash given both as hex
// (what version 1 writes) and raw (version 2), into the `size` bytes that
// `place(size)` makes room for and returns; returns the bytes written.
template <typename E, typename Place>
absl::string_view EncodeWith(const E& e, uint32_t version, uint64_t sequence,
                             absl::string_view prev_hash_hex, absl::string_view prev_hash_raw,
                             Place place) {
  const bool v1 = version == kEncodingV1;
  const Layout layout = v1 ? Measure(e, prev_hash_hex.size()) : MeasureV2(e);
  char* const start = place(layout.size);
  [[maybe_unused]] const char* const end =
      v1 ? WriteCanonicalWith(e, layout, sequence, prev_hash_hex, start)
         : WriteV2(e, layout, sequence, prev_hash_raw, start);
  assert(end == start + layout.size);
  return absl::string_view(start, layout.size);
}

// Whether `bytes` starts with version 2's tag.
bool IsV2(absl::string_view bytes) { return bytes.substr(0, kTagV2.size()) == kTagV2; }

// Reads a shortest-form varint of at most 32 bits.
bool ReadVarint(absl::string_view* in, uint32_t* v) {
  uint32_t result = 0;
  for (size_t i = 0; i < 5; ++i) {
    if (in->size() <= i) return false;
    const auto b = static_cast<uint8_t>((*in)[i]);
    if (i == 4 && b > 0x0f) return false;  // past 32 bits
    result |= static_cast<uint32_t>(b & 0x7fU) << (7 * i);
    if ((b & 0x80U) == 0) {
      if (i > 0 && b == 0) return false;  // not the shortest form
      in->remove_prefix(i + 1);
      *v = result;
      return true;
    }
  }
  return false;
}

// Reads a version-2 string: varint length, bytes.
bool ReadStr(absl::string_view* in, absl::string_view* s) {
  uint32_t n = 0;
  if (!in->empty() && static_cast<uint8_t>((*in)[0]) < 0x80) {
    n = static_cast<uint8_t>((*in)[0]);
    in->remove_prefix(1);
  } else if (!ReadVarint(in, &n)) {
    return false;
  }
  if (in->size() < n) return false;
  *s = in->substr(0, n);
  in->remove_prefix(n);
  return true;
}

bool ReadRawTime(absl::string_view* in, int64_t* seconds, int32_t* nanos) {
  if (in->size() < kTimeBytes) return false;
  *seconds = static_cast<int64_t>(LoadU64(in->data()));
  *nanos = static_cast<int32_t>(LoadU32(in->data() + 8));
  in->remove_prefix(kTimeBytes);
  return true;
}

bool ParseV2(absl::string_view bytes, CanonicalFields* f) {
  if (bytes.size() < kV2FixedPrefix + 1 || !IsV2(bytes)) return false;
  f->version = kEncodingV2;
  f->sequence = LoadU64(bytes.data() + kCanonicalV2SequenceOffset);
  f->prev_hash_stored = bytes.substr(kCanonicalV2PrevHashOffset, 32);
  std::memcpy(f->prev_hash_raw.data(), f->prev_hash_stored.data(), 32);
  f->prev_hash_ok = true;
  absl::string_view in = bytes.substr(kV2FixedPrefix);
  const auto flags = static_cast<uint8_t>(in[0]);
  in.remove_prefix(1);
  if ((flags & ~(kFlagTime | kFlagDuration)) != 0) return false;
  f->has_time = (flags & kFlagTime) != 0;
  f->has_duration = (flags & kFlagDuration) != 0;
  if (f->has_time && !ReadRawTime(&in, &f->time_seconds, &f->time_nanos)) return false;
  if (in.size() < 8) return false;
  f->type = static_cast<int32_t>(LoadU32(in.data()));
  f->outcome = static_cast<int32_t>(LoadU32(in.data() + 4));
  in.remove_prefix(8);
  if (f->has_duration && !ReadRawTime(&in, &f->duration_seconds, &f->duration_nanos)) {
    return false;
  }
  for (absl::string_view* s : {&f->event_id, &f->tenant_id, &f->product_key, &f->device_id,
                               &f->reason, &f->credential_type, &f->credential_fingerprint,
                               &f->caller, &f->peer_address, &f->request_id}) {
    if (!ReadStr(&in, s)) return false;
  }
  if (!ReadVarint(&in, &f->attribute_count)) return false;
  const char* const attributes = in.data();
  absl::string_view prev_key;
  for (uint32_t i = 0; i < f->attribute_count; ++i) {
    absl::string_view key;
    absl::string_view value;
    if (!ReadStr(&in, &key) || !ReadStr(&in, &value)) return false;
    if (i > 0 && !(prev_key < key)) return false;  // sorted, distinct
    prev_key = key;
  }
  f->attributes = absl::string_view(attributes, static_cast<size_t>(in.data() - attributes));
  return in.size() == 1 && in[0] == kEndV2;
}

// Appends the canonical encoding of `e`, with `sequence` and `prev_hash` in place
// of the event's own, to `*out`.
void AppendCanonicalWith(const AuditEvent& e, uint64_t sequence, absl::string_view prev_hash,
                         std::string* out) {
  const uint32_t version = EncodingOf(e);
  const std::array<char, 32> raw =
      version == kEncodingV2 ? RawHash(prev_hash) : std::array<char, 32>{};
  EncodeWith(e, version, sequence, prev_hash, View(raw),
             [out](size_t size) { return Grow(size, out); });
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

uint32_t EncodingOf(const AuditEvent& event) {
  return event.encoding() == kEncodingV1 ? kEncodingV1 : kEncodingV2;
}

bool ParseCanonical(absl::string_view bytes, CanonicalFields* out) {
  if (IsV2(bytes)) return ParseV2(bytes, out);
  absl::string_view in = bytes;
  CanonicalFields* const f = out;
  if (in.substr(0, kDomainTag.size()) != kDomainTag) return false;
  f->version = kEncodingV1;
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
  if (!NextField(&in, 16, &f->attributes) || !NextField(&in, 17, &f->prev_hash_stored)) {
    return false;
  }
  f->prev_hash_ok = IsWellFormedHash(f->prev_hash_stored);
  f->prev_hash_raw = RawHash(f->prev_hash_stored);
  return in.empty();
}

bool HashCanonical(absl::string_view bytes, const CanonicalFields& fields, unsigned char* out) {
  if (fields.version == kEncodingV2) return crypto::Sha256Into(bytes, {}, out);
  return fields.prev_hash_ok && crypto::Sha256Into(fields.prev_hash_raw_view(), bytes, out);
}

bool HashChainedEncoding(absl::string_view bytes, absl::string_view prev_hash_raw,
                         unsigned char* out) {
  if (IsV2(bytes)) return crypto::Sha256Into(bytes, {}, out);
  return crypto::Sha256Into(prev_hash_raw, bytes, out);
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
  e->set_encoding(f.version);
  auto* attrs = e->mutable_attributes();
  absl::string_view in = f.attributes;
  if (f.version == kEncodingV2) {
    e->set_prev_hash(crypto::HexEncode(f.prev_hash_raw_view()));
    for (uint32_t i = 0; i < f.attribute_count; ++i) {
      absl::string_view k;
      absl::string_view v;
      if (!ReadStr(&in, &k) || !ReadStr(&in, &v)) return false;
      (*attrs)[std::string(k)] = std::string(v);
    }
    return in.empty();
  }
  e->set_prev_hash(std::string(f.prev_hash_stored));
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
  // The placeholder prev_hash in both forms: raw zeros for version 2 (every audited
  // request), nothing to decode.
  static constexpr char kZeros[32] = {};
  return EncodeWith(event, event.encoding() == kEncodingV1 ? kEncodingV1 : kEncodingV2, 0,
                    kGenesisHash, absl::string_view(kZeros, sizeof(kZeros)),
                    [scratch](size_t size) {
                      if (scratch->size() < size) scratch->resize(size);
                      return scratch->data();
                    });
}

}  // namespace

absl::string_view EncodeUnchainedInto(const AuditEvent& event, std::string* scratch) {
  return EncodeUnchainedIntoImpl(event, scratch);
}

absl::string_view EncodeUnchainedInto(const EventView& event, std::string* scratch) {
  return EncodeUnchainedIntoImpl(ViewAccess(event), scratch);
}

bool IsUnchainedEncoding(absl::string_view bytes) {
  if (IsV2(bytes)) return bytes.size() >= kV2FixedPrefix + 2;
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
  if (IsV2(absl::string_view(bytes, size))) {
    big_endian::StoreU64(sequence, bytes + kCanonicalV2SequenceOffset);
    std::memcpy(bytes + kCanonicalV2PrevHashOffset, prev_hash_raw.data(), 32);
    return;
  }
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
  if (event.encoding() > kEncodingV2) {
    return absl::InvalidArgumentError("unknown canonical encoding version");
  }
  if (!IsWellFormedHash(event.prev_hash())) {
    return absl::InvalidArgumentError("prev_hash is not 64 lowercase hex digits");
  }
  if (EncodingOf(event) == kEncodingV2) return crypto::Sha256Hex(CanonicalEncoding(event));
  // One buffer: raw(prev_hash) then the canonical encoding.
  std::string buf;
  buf.reserve(512);
  const std::array<char, 32> prev = RawHash(event.prev_hash());
  buf.append(prev.data(), prev.size());
  AppendCanonical(event, &buf);
  return crypto::Sha256Hex(buf);
}

absl::Status ChainEvent(absl::string_view prev_hash, AuditEvent* event) {
  event->set_prev_hash(std::string(prev_hash));
  if (event->encoding() <= kEncodingV2) event->set_encoding(EncodingOf(*event));
  IOTAUTH_ASSIGN_OR_RETURN(std::string hash, ComputeEventHash(*event));
  event->set_hash(std::move(hash));
  return absl::OkStatus();
}

}  // namespace iotauth::audit
