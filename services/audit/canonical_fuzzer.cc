// libFuzzer target: the canonical-encoding parser that reads audit log segments
// (services/audit/log_audit_store.h). A file on disk is input an attacker may
// have edited: parsing must never crash or read out of bounds, and what parses
// must encode back to something that parses to the same event. Bytes that pass
// IsUnchainedEncoding (the check AppendEncoded makes) must stay in bounds when
// chained, and chaining must not change what they parse to beyond the two fields.
// The producer's scratch encoding must equal the appended one, and so must the
// encoding of an EventView of the event (a repeated attribute key added after the
// others must keep the first value).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
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
      std::string want;
      for (int i = 0; i < 32; ++i) want += "5a";
      if (c.sequence != 7 || c.prev_hash != want || c.event_id != f.event_id ||
          c.device_id != f.device_id || c.attributes != f.attributes) {
        std::abort();
      }
    }
  }
  if (!parses) return 0;
  iotauth::audit::v1::AuditEvent e;
  if (!CanonicalFieldsToEvent(f, &e)) return 0;
  const std::string again = CanonicalEncoding(e);
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
  static auto* const view_scratch = new std::string();
  if (iotauth::audit::EncodeUnchainedInto(view, view_scratch) != unchained) std::abort();
  CanonicalFields g;
  if (!ParseCanonical(again, &g)) std::abort();
  iotauth::audit::v1::AuditEvent e2;
  if (!CanonicalFieldsToEvent(g, &e2) ||
      !google::protobuf::util::MessageDifferencer::Equals(e, e2)) {
    std::abort();
  }
  return 0;
}
