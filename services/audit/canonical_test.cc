#include "services/audit/canonical.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace iotauth::audit {
namespace {

using iotauth::audit::v1::AuditEvent;

constexpr char kPrev[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

AuditEvent FixedEvent() {
  AuditEvent e;
  e.set_sequence(42);
  e.set_event_id("0123456789abcdef0123456789abcdef");
  e.mutable_time()->set_seconds(1700000000);
  e.mutable_time()->set_nanos(123456789);
  e.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION);
  e.set_tenant_id("tenant-a");
  e.set_product_key("prod-1");
  e.set_device_id("dev-7");
  e.set_outcome(iotauth::audit::v1::OUTCOME_DENY);
  e.set_reason("DENY_REASON_BAD_SIGNATURE");
  e.set_credential_type("CREDENTIAL_TYPE_SAS");
  e.set_credential_fingerprint("sha256:abcd");
  e.set_caller("gateway-1");
  e.set_peer_address("ipv4:10.0.0.1:5555");
  e.set_request_id("req-9");
  e.mutable_duration()->set_seconds(0);
  e.mutable_duration()->set_nanos(250000);
  (*e.mutable_attributes())["zeta"] = "last";
  (*e.mutable_attributes())["alpha"] = "first";
  e.set_prev_hash(kPrev);
  return e;
}

AuditEvent FixedEventV1() {
  AuditEvent e = FixedEvent();
  e.set_encoding(kEncodingV1);
  return e;
}

// Golden values from canonical_golden.py, an independent implementation of the
// layouts documented in canonical.h. If one changes, every chain stored in that
// version stops verifying: introduce a new version tag instead.
TEST(CanonicalTest, GoldenHash) {
  auto h = ComputeEventHash(FixedEventV1());
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, "35d4edd224b2b67fc18081cdc99a816195e75173951c1ce7e4aa994b575128e5");
  auto h2 = ComputeEventHash(FixedEvent());  // encoding 0: the current version, 2
  ASSERT_TRUE(h2.ok()) << h2.status();
  EXPECT_EQ(*h2, "6d1cd41536f2fe3b4901145ee4b89a242f271c97be100cfe84aa7306296e5e45");
  AuditEvent explicit_v2 = FixedEvent();
  explicit_v2.set_encoding(kEncodingV2);
  EXPECT_EQ(*ComputeEventHash(explicit_v2), *h2);
  EXPECT_EQ(CanonicalEncoding(FixedEvent()).size(), 253u);
  AuditEvent long_fields = FixedEvent();  // 2- and 3-byte varint lengths
  long_fields.set_reason(std::string(200, 'r'));
  (*long_fields.mutable_attributes())["zeta"] = std::string(20000, 'v');
  EXPECT_EQ(*ComputeEventHash(long_fields),
            "51681fb2598c122604a324eaedd404e2008af8644ef10a42249ef3fd0ef1f3dc");
  EXPECT_EQ(CanonicalEncoding(long_fields).size(), 20427u);
  AuditEvent unknown = FixedEvent();
  unknown.set_encoding(3);
  EXPECT_EQ(ComputeEventHash(unknown).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CanonicalTest, GoldenEncodingPrefix) {
  const std::string enc = CanonicalEncoding(FixedEventV1());
  const std::string tag = "iotauth.audit.v1.AuditEvent/1";
  ASSERT_GE(enc.size(), tag.size() + 16);
  EXPECT_EQ(enc.substr(0, tag.size()), tag);
  // Field 1 (sequence): number 1, length 8, value 42.
  EXPECT_EQ(enc.substr(tag.size(), 16), std::string("\0\0\0\1\0\0\0\x08\0\0\0\0\0\0\0\x2a", 16));

  const std::string v2 = CanonicalEncoding(FixedEvent());
  ASSERT_GE(v2.size(), 49u);
  EXPECT_EQ(v2.substr(0, 16), std::string("iaudit/2\0\0\0\0\0\0\0\x2a", 16));
  EXPECT_EQ(absl::BytesToHexString(v2.substr(kCanonicalV2PrevHashOffset, 32)), kPrev);
  EXPECT_EQ(v2[48], '\x03');  // time and duration set
  EXPECT_EQ(v2.back(), '\xa5');
}

// Both versions, for the tests that hold for each.
std::vector<AuditEvent> FixedEvents() { return {FixedEventV1(), FixedEvent()}; }

TEST(CanonicalTest, IgnoresHashAndMapInsertionOrder) {
  AuditEvent a = FixedEvent();
  AuditEvent b;
  b.set_hash("ffff");
  b.mutable_attributes()->insert({"alpha", "first"});
  b.mutable_attributes()->insert({"zeta", "last"});
  AuditEvent rest = FixedEvent();
  rest.clear_attributes();
  b.MergeFrom(rest);
  EXPECT_EQ(CanonicalEncoding(a), CanonicalEncoding(b));
  EXPECT_EQ(*ComputeEventHash(a), *ComputeEventHash(b));
}

TEST(CanonicalTest, EveryFieldChangesTheHash) {
  for (const AuditEvent& fixed : FixedEvents()) {
    const std::string base = *ComputeEventHash(fixed);
    struct Case {
      const char* name;
      std::function<void(AuditEvent*)> mutate;
    };
    const std::vector<Case> cases = {
        {"sequence", [](AuditEvent* e) { e->set_sequence(43); }},
        {"event_id", [](AuditEvent* e) { e->set_event_id("x"); }},
        {"time.seconds", [](AuditEvent* e) { e->mutable_time()->set_seconds(1700000001); }},
        {"time.nanos", [](AuditEvent* e) { e->mutable_time()->set_nanos(1); }},
        {"time unset", [](AuditEvent* e) { e->clear_time(); }},
        {"type", [](AuditEvent* e) { e->set_type(iotauth::audit::v1::EVENT_TYPE_GAP); }},
        {"tenant_id", [](AuditEvent* e) { e->set_tenant_id("tenant-b"); }},
        {"product_key", [](AuditEvent* e) { e->set_product_key("prod-2"); }},
        {"device_id", [](AuditEvent* e) { e->set_device_id("dev-8"); }},
        {"outcome", [](AuditEvent* e) { e->set_outcome(iotauth::audit::v1::OUTCOME_ALLOW); }},
        {"reason", [](AuditEvent* e) { e->set_reason("OK"); }},
        {"credential_type", [](AuditEvent* e) { e->set_credential_type("X509"); }},
        {"credential_fingerprint", [](AuditEvent* e) { e->set_credential_fingerprint("f"); }},
        {"caller", [](AuditEvent* e) { e->set_caller("admin"); }},
        {"peer_address", [](AuditEvent* e) { e->set_peer_address("ipv4:10.0.0.2:1"); }},
        {"request_id", [](AuditEvent* e) { e->set_request_id("req-10"); }},
        {"duration", [](AuditEvent* e) { e->mutable_duration()->set_nanos(250001); }},
        {"duration unset", [](AuditEvent* e) { e->clear_duration(); }},
        {"attribute value", [](AuditEvent* e) { (*e->mutable_attributes())["zeta"] = "lasT"; }},
        {"attribute added", [](AuditEvent* e) { (*e->mutable_attributes())["m"] = ""; }},
        {"attribute removed", [](AuditEvent* e) { e->mutable_attributes()->erase("alpha"); }},
        {"prev_hash",
         [](AuditEvent* e) {
           e->set_prev_hash("10112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
         }},
    };
    for (const Case& c : cases) {
      AuditEvent e = fixed;
      c.mutate(&e);
      auto h = ComputeEventHash(e);
      ASSERT_TRUE(h.ok()) << c.name;
      EXPECT_NE(*h, base) << c.name << " in version " << fixed.encoding();
    }
    AuditEvent other_version = fixed;
    other_version.set_encoding(fixed.encoding() == kEncodingV1 ? kEncodingV2 : kEncodingV1);
    EXPECT_NE(*ComputeEventHash(other_version), base);
  }
}

TEST(CanonicalTest, LengthPrefixesPreventShifting) {
  for (const AuditEvent& fixed : FixedEvents()) {
    AuditEvent a = fixed;
    AuditEvent b = fixed;
    a.set_reason("ab");
    a.set_credential_type("");
    b.set_reason("a");
    b.set_credential_type("b");
    EXPECT_NE(CanonicalEncoding(a), CanonicalEncoding(b));
    AuditEvent c = fixed;
    AuditEvent d = fixed;
    c.clear_attributes();
    (*c.mutable_attributes())["ab"] = "";
    d.clear_attributes();
    (*d.mutable_attributes())["a"] = "b";
    EXPECT_NE(CanonicalEncoding(c), CanonicalEncoding(d));
    // An unset timestamp differs from the epoch.
    AuditEvent f = fixed;
    AuditEvent g = fixed;
    f.clear_time();
    g.mutable_time()->set_seconds(0);
    g.mutable_time()->set_nanos(0);
    EXPECT_NE(CanonicalEncoding(f), CanonicalEncoding(g));
  }
}

TEST(CanonicalTest, RejectsMalformedPrevHash) {
  for (const char* bad :
       {"", "00", "0011223344556677889AABBCCDDEEFF00112233445566778899aabbccddeeff",
        "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}) {
    for (AuditEvent e : FixedEvents()) {
      e.set_prev_hash(bad);
      EXPECT_EQ(ComputeEventHash(e).status().code(), absl::StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(CanonicalTest, ChainLinksEvents) {
  std::string prev(kGenesisHash);
  std::vector<AuditEvent> chain;
  for (int i = 1; i <= 3; ++i) {
    AuditEvent e = FixedEvent();
    e.set_sequence(i);
    ASSERT_TRUE(ChainEvent(prev, &e).ok());
    EXPECT_EQ(e.encoding(), kEncodingV2);  // 0 became the version it was chained in
    EXPECT_EQ(e.prev_hash(), prev);
    EXPECT_TRUE(IsWellFormedHash(e.hash()));
    EXPECT_EQ(*ComputeEventHash(e), e.hash());
    prev = e.hash();
    chain.push_back(e);
  }
  EXPECT_NE(chain[0].hash(), chain[1].hash());
  // Changing an earlier link changes every later hash.
  AuditEvent first = chain[0];
  first.set_device_id("other");
  ASSERT_TRUE(ChainEvent(kGenesisHash, &first).ok());
  AuditEvent second = chain[1];
  ASSERT_TRUE(ChainEvent(first.hash(), &second).ok());
  EXPECT_NE(second.hash(), chain[1].hash());
}

}  // namespace
}  // namespace iotauth::audit

namespace iotauth::audit {
namespace {

TEST(ParseCanonicalTest, RoundTripsEveryField) {
  for (AuditEvent e : FixedEvents()) {
    e.set_sequence(77);
    (*e.mutable_attributes())["b"] = "2";
    (*e.mutable_attributes())["a"] = std::string("\0x", 2);
    (*e.mutable_attributes())[std::string(200, 'k')] = std::string(300, 'v');  // 2-byte varints
    e.set_reason(std::string(20000, 'r'));                                     // 3 bytes
    ASSERT_TRUE(ChainEvent(kGenesisHash, &e).ok());
    const std::string bytes = CanonicalEncoding(e);
    CanonicalFields f;
    ASSERT_TRUE(ParseCanonical(bytes, &f));
    EXPECT_EQ(f.version, e.encoding());
    EXPECT_EQ(f.sequence, 77u);
    EXPECT_EQ(f.device_id, e.device_id());
    EXPECT_TRUE(f.prev_hash_ok);
    EXPECT_EQ(absl::BytesToHexString(f.prev_hash_raw_view()), e.prev_hash());
    AuditEvent back;
    ASSERT_TRUE(CanonicalFieldsToEvent(f, &back));
    back.set_hash(e.hash());
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(back, e)) << e.encoding();
    EXPECT_EQ(CanonicalEncoding(back), bytes);
    unsigned char hash[32];
    ASSERT_TRUE(HashCanonical(bytes, f, hash));
    EXPECT_EQ(absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(hash), 32)),
              e.hash());
  }
}

TEST(ParseCanonicalTest, UnsetTimeAndDurationStayUnset) {
  for (AuditEvent e : FixedEvents()) {
    e.clear_time();
    e.clear_duration();
    CanonicalFields f;
    ASSERT_TRUE(ParseCanonical(CanonicalEncoding(e), &f));
    EXPECT_FALSE(f.has_time);
    EXPECT_FALSE(f.has_duration);
  }
}

TEST(ParseCanonicalTest, RejectsEveryTruncationAndTrailingBytes) {
  for (const AuditEvent& e : FixedEvents()) {
    const std::string bytes = CanonicalEncoding(e);
    CanonicalFields f;
    for (size_t n = 0; n < bytes.size(); ++n) {
      EXPECT_FALSE(ParseCanonical(bytes.substr(0, n), &f)) << n;
    }
    EXPECT_FALSE(ParseCanonical(bytes + "x", &f));
    std::string wrong_tag = bytes;
    wrong_tag[0] = 'X';
    EXPECT_FALSE(ParseCanonical(wrong_tag, &f));
  }
}

// A count of two, then two attributes with one-byte keys and values, as version 2
// writes them.
std::string TwoAttributes(char k1, char v1, char k2, char v2) {
  return {'\x02', '\x01', k1, '\x01', v1, '\x01', k2, '\x01', v2};
}

// Version 2 has exactly one encoding per event: anything else that would decode to
// the same fields is refused, so re-encoding a parsed event gives its bytes back.
TEST(ParseCanonicalTest, VersionTwoRefusesEveryOtherSpelling) {
  AuditEvent e = FixedEvent();
  e.clear_attributes();
  (*e.mutable_attributes())["a"] = "1";
  (*e.mutable_attributes())["b"] = "2";
  const std::string bytes = CanonicalEncoding(e);
  CanonicalFields f;
  ASSERT_TRUE(ParseCanonical(bytes, &f));
  EXPECT_EQ(f.attribute_count, 2u);
  // The fixed part: tag, sequence, prev_hash, flags, time, type, outcome, duration.
  const size_t strings = 49 + 12 + 8 + 12;
  ASSERT_EQ(bytes[strings], '\x20');  // event_id: 32 bytes
  // event_id's length as a two-byte varint (0xa0 0x00): not the shortest form.
  std::string long_varint = bytes;
  long_varint.replace(strings, 1, std::string("\xa0\x00", 2));
  EXPECT_FALSE(ParseCanonical(long_varint, &f));
  // Unknown flag bits.
  std::string flags = bytes;
  flags[48] = '\x07';
  EXPECT_FALSE(ParseCanonical(flags, &f));
  // Attributes out of order, or a key twice.
  const std::string ab = TwoAttributes('a', '1', 'b', '2');
  const size_t at = bytes.find(ab);
  ASSERT_NE(at, std::string::npos);
  std::string swapped = bytes;
  swapped.replace(at, ab.size(), TwoAttributes('b', '2', 'a', '1'));
  EXPECT_FALSE(ParseCanonical(swapped, &f));
  std::string repeated = bytes;
  repeated.replace(at, ab.size(), TwoAttributes('a', '1', 'a', '2'));
  EXPECT_FALSE(ParseCanonical(repeated, &f));
  // A wrong end marker.
  std::string end = bytes;
  end.back() = '\0';
  EXPECT_FALSE(ParseCanonical(end, &f));
  // A varint past 32 bits (32 again once truncated to 32 bits).
  std::string huge = bytes;
  huge.replace(strings, 1, std::string("\xa0\x80\x80\x80\x10", 5));  // 32 + 2^32
  EXPECT_FALSE(ParseCanonical(huge, &f));
}

// Torn-write recovery tells a complete last frame from one cut short by the zeros
// after it: no complete encoding ends in a zero byte.
TEST(ParseCanonicalTest, NoEncodingEndsInZero) {
  AuditEvent e;
  e.set_encoding(kEncodingV2);
  EXPECT_NE(CanonicalEncoding(e).back(), '\0');
  (*e.mutable_attributes())["k"] = std::string(8, '\0');
  EXPECT_NE(CanonicalEncoding(e).back(), '\0');
}

TEST(ParseCanonicalTest, RejectsMalformedAttributes) {
  AuditEvent e = FixedEventV1();
  (*e.mutable_attributes())["k"] = "v";
  CanonicalFields f;
  const std::string bytes = CanonicalEncoding(e);
  ASSERT_TRUE(ParseCanonical(bytes, &f));
  const std::string attrs(f.attributes);
  CanonicalFields cut = f;
  const std::string shorter = attrs.substr(0, attrs.size() - 1);
  cut.attributes = shorter;
  AuditEvent out;
  EXPECT_FALSE(CanonicalFieldsToEvent(cut, &out));
}

// An unchained encoding, filled in, is exactly the canonical encoding of the event
// with that sequence and prev_hash (so the log store can write producers' bytes).
TEST(UnchainedEncodingTest, ChainingGivesTheCanonicalEncoding) {
  for (AuditEvent event : FixedEvents()) {
    event.set_hash("ignored");
    std::string bytes;
    AppendUnchainedEncoding(event, &bytes);
    ASSERT_TRUE(IsUnchainedEncoding(bytes));
    AuditEvent placeholders = event;
    placeholders.set_sequence(0);
    placeholders.set_prev_hash(std::string(kGenesisHash));
    EXPECT_EQ(bytes, CanonicalEncoding(placeholders));

    std::string prev_raw;
    for (int i = 0; i < 32; ++i) prev_raw.push_back(static_cast<char>(0xf0 + (i % 16) - i));
    ChainUnchainedEncoding(0x0102030405060708ULL, prev_raw, bytes.data(), bytes.size());
    AuditEvent chained = event;
    chained.set_sequence(0x0102030405060708ULL);
    const std::string prev_hex = absl::BytesToHexString(prev_raw);
    chained.set_prev_hash(prev_hex);
    EXPECT_EQ(bytes, CanonicalEncoding(chained));
    CanonicalFields fields;
    ASSERT_TRUE(ParseCanonical(bytes, &fields));
    EXPECT_EQ(fields.sequence, 0x0102030405060708ULL);
    EXPECT_EQ(fields.prev_hash_raw_view(), prev_raw);
    unsigned char from_parse[32];
    unsigned char from_chain[32];
    ASSERT_TRUE(HashCanonical(bytes, fields, from_parse));
    ASSERT_TRUE(HashChainedEncoding(bytes, prev_raw, from_chain));
    EXPECT_EQ(std::string(reinterpret_cast<char*>(from_parse), 32),
              std::string(reinterpret_cast<char*>(from_chain), 32));
    EXPECT_EQ(absl::BytesToHexString(std::string(reinterpret_cast<char*>(from_chain), 32)),
              *ComputeEventHash(chained));

    // An event with no optional fields at all has the same shape.
    std::string empty;
    AuditEvent bare;
    bare.set_encoding(event.encoding());
    AppendUnchainedEncoding(bare, &empty);
    EXPECT_TRUE(IsUnchainedEncoding(empty));
    EXPECT_TRUE(ParseCanonical(empty, &fields));
  }
}

// The scratch form: a long event then a shorter one in the same scratch string
// gives each exactly its own encoding (no stale tail), and the scratch only grows.
TEST(UnchainedEncodingTest, ScratchEncodingMatchesAndReusesTheBuffer) {
  AuditEvent long_event = FixedEvent();
  (*long_event.mutable_attributes())["note"] = std::string(300, 'n');
  std::string want_long;
  AppendUnchainedEncoding(long_event, &want_long);
  std::string scratch;
  EXPECT_EQ(EncodeUnchainedInto(long_event, &scratch), want_long);
  const size_t grown = scratch.size();
  EXPECT_EQ(grown, want_long.size());

  AuditEvent short_event;
  short_event.set_event_id("e1");
  std::string want_short;
  AppendUnchainedEncoding(short_event, &want_short);
  const absl::string_view got = EncodeUnchainedInto(short_event, &scratch);
  EXPECT_EQ(got, want_short);
  EXPECT_EQ(got.data(), scratch.data());
  EXPECT_EQ(scratch.size(), grown);  // not shrunk, not refilled
  EXPECT_TRUE(IsUnchainedEncoding(got));
}

// An EventView encodes to exactly the bytes of the message it describes, whatever
// the order of its attributes; a repeated key keeps its first value, as in a map.
TEST(UnchainedEncodingTest, ViewEncodingMatchesTheMessage) {
  AuditEvent e = FixedEvent();  // attributes zeta and alpha
  (*e.mutable_attributes())["mid"] = "middle";
  std::string from_message;
  AppendUnchainedEncoding(e, &from_message);
  std::vector<EventView::Attribute> attributes;
  EventView v = ViewOf(e, &attributes);
  ASSERT_GE(attributes.size(), 3u);
  std::reverse(attributes.begin(), attributes.end());
  attributes.emplace_back("alpha", "ignored: alpha came earlier");
  v.attributes = attributes;
  std::string scratch;
  EXPECT_EQ(EncodeUnchainedInto(v, &scratch), from_message);
  EXPECT_EQ(EncodeUnchainedInto(ToAuditEvent(v), &scratch), from_message);
  // Unset time and duration, no attributes.
  e.clear_time();
  e.clear_duration();
  e.clear_attributes();
  from_message.clear();
  AppendUnchainedEncoding(e, &from_message);
  EXPECT_EQ(EncodeUnchainedInto(ViewOf(e, &attributes), &scratch), from_message);
}

TEST(UnchainedEncodingTest, RejectsOtherLayouts) {
  AuditEvent event = FixedEventV1();
  std::string bytes;
  AppendUnchainedEncoding(event, &bytes);
  ASSERT_TRUE(IsUnchainedEncoding(bytes));
  // A chained encoding with a short prev_hash: field 17 is not 64 bytes.
  event.set_prev_hash("abc");
  EXPECT_FALSE(IsUnchainedEncoding(CanonicalEncoding(event)));
  EXPECT_FALSE(IsUnchainedEncoding(""));
  EXPECT_FALSE(IsUnchainedEncoding(bytes.substr(0, bytes.size() - 1)));
  EXPECT_FALSE(IsUnchainedEncoding(bytes.substr(1)));
  std::string wrong_tag = bytes;
  wrong_tag[0] = 'x';
  EXPECT_FALSE(IsUnchainedEncoding(wrong_tag));
  std::string wrong_sequence_size = bytes;
  wrong_sequence_size[kCanonicalSequenceOffset - 1] = 9;
  EXPECT_FALSE(IsUnchainedEncoding(wrong_sequence_size));

  std::string v2;
  AppendUnchainedEncoding(FixedEvent(), &v2);
  ASSERT_TRUE(IsUnchainedEncoding(v2));
  EXPECT_FALSE(IsUnchainedEncoding(v2.substr(0, 49)));  // no room past the flags
  std::string wrong_v2_tag = v2;
  wrong_v2_tag[7] = '3';
  EXPECT_FALSE(IsUnchainedEncoding(wrong_v2_tag));
}

}  // namespace
}  // namespace iotauth::audit
