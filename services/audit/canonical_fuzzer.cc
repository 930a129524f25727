// libFuzzer target: the canonical-encoding parser (both versions) that reads audit
// log segments (services/audit/log_audit_store.h). A file on disk is input an
// attacker may have edited: parsing must never crash or read out of bounds, and
// what parses must encode back to something that parses to the same event (in
// version 2, to the very same bytes). Bytes that pass
// IsUnchainedEncoding (the check AppendEncoded makes) must stay in bounds when
// chained, and chaining must not change what they parse to beyond the two fields.
// The producer's scratch encoding must equal the appended one, and so must the
// encoding of an EventView of the event (a repeated attribute key added after the
// others must keep the first value).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "google/protobuf/util/message_differencer.h"
#include "services/audit/canonical.h"

using iotauth::audit::CanonicalEncoding;
using iotauth::audit::CanonicalFields;
using iotauth::audit::CanonicalFieldsToEvent;
using iotauth::audit::ParseCanonical;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  CanonicalFields f;
  const bool parses = ParseCanonical(in, &f);
  if (iotauth::audit::IsUnchainedEncoding(in)) {
    std::string chained(in);
    const std::string prev(32, '\x5a');
    iotauth::audit::ChainUnchainedEncoding(7, prev, chained.data(), chained.size());
    CanonicalFields c;
    if (ParseCanonical(chained, &c) != parses) std::abort();
    if (parses) {
      if (c.sequence != 7 || !c.prev_hash_ok || c.prev_hash_raw_view() != prev ||
          c.version != f.version || c.event_id != f.event_id || c.device_id != f.device_id ||
          c.attributes != f.attributes) {
        std::abort();
      }
      unsigned char a[32];
      unsigned char b[32];
      if (!iotauth::audit::HashCanonical(chained, c, a) ||
          !iotauth::audit::HashChainedEncoding(chained, prev, b) || std::memcmp(a, b, 32) != 0) {
        std::abort();
      }
    }
  }
  if (!parses) return 0;
  iotauth::audit::v1::AuditEvent e;
  if (!CanonicalFieldsToEvent(f, &e)) return 0;
  const std::string again = CanonicalEncoding(e);
  // Version 2 has one spelling per event: what parses re-encodes to itself.
  if (f.version == iotauth::audit::kEncodingV2 && again != in) std::abort();
  // The producer's scratch form: one scratch string kept across inputs (of every
  // size) must give exactly the appended encoding each time.
  static auto* const scratch = new std::string();
  std::string unchained;
  iotauth::audit::AppendUnchainedEncoding(e, &unchained);
  if (iotauth::audit::EncodeUnchainedInto(e, scratch) != unchained) std::abort();
  std::vector<iotauth::audit::EventView::Attribute> attributes;
  iotauth::audit::EventView view = iotauth::audit::ViewOf(e, &attributes);
  if (!attributes.empty()) {
    attributes.emplace_back(attributes.front().first, "a later value for the same key");
    view.attributes = attributes;
  }
  // A view is always encoded in the current version.
  iotauth::audit::v1::AuditEvent current = e;
  current.clear_encoding();
  std::string unchained_current;
  iotauth::audit::AppendUnchainedEncoding(current, &unchained_current);
  static auto* const view_scratch = new std::string();
  if (iotauth::audit::EncodeUnchainedInto(view, view_scratch) != unchained_current) std::abort();
  CanonicalFields g;
  if (!ParseCanonical(again, &g)) std::abort();
  iotauth::audit::v1::AuditEvent e2;
  if (!CanonicalFieldsToEvent(g, &e2) ||
      !google::protobuf::util::MessageDifferencer::Equals(e, e2)) {
    std::abort();
  }
  return 0;
}
