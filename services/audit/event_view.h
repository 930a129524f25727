// An audit event as views of its field values, for producers that record on a hot
// path (Authenticate): LocalAuditSink encodes it straight into the canonical form,
// with no AuditEvent message built, copied or cleared on the way.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "proto/iotauth/audit/v1/audit.pb.h"

namespace iotauth::audit {

// The fields of iotauth.audit.v1.AuditEvent, same meaning, minus sequence,
// prev_hash and hash (the log assigns them). Owns nothing: the viewed strings need
// only outlive the Record call.
struct EventView {
  struct Time {
    int64_t seconds = 0;
    int32_t nanos = 0;
  };
  using Attribute = std::pair<absl::string_view, absl::string_view>;

  absl::string_view event_id;  // empty: the sink assigns one
  bool has_time = false;       // false (or nanos outside 0..999999999): the sink's clock
  Time time;
  iotauth::audit::v1::EventType type = iotauth::audit::v1::EVENT_TYPE_UNSPECIFIED;
  absl::string_view tenant_id;
  absl::string_view product_key;
  absl::string_view device_id;
  iotauth::audit::v1::Outcome outcome = iotauth::audit::v1::OUTCOME_UNSPECIFIED;
  absl::string_view reason;
  absl::string_view credential_type;
  absl::string_view credential_fingerprint;
  absl::string_view caller;
  absl::string_view peer_address;
  absl::string_view request_id;
  bool has_duration = false;
  Time duration;
  // Any order. A key given twice keeps its first value, as a map insert would.
  absl::Span<const Attribute> attributes;
};

// The AuditEvent `view` describes.
inline iotauth::audit::v1::AuditEvent ToAuditEvent(const EventView& view) {
  iotauth::audit::v1::AuditEvent e;
  e.set_event_id(std::string(view.event_id));
  if (view.has_time) {
    e.mutable_time()->set_seconds(view.time.seconds);
    e.mutable_time()->set_nanos(view.time.nanos);
  }
  e.set_type(view.type);
  e.set_tenant_id(std::string(view.tenant_id));
  e.set_product_key(std::string(view.product_key));
  e.set_device_id(std::string(view.device_id));
  e.set_outcome(view.outcome);
  e.set_reason(std::string(view.reason));
  e.set_credential_type(std::string(view.credential_type));
  e.set_credential_fingerprint(std::string(view.credential_fingerprint));
  e.set_caller(std::string(view.caller));
  e.set_peer_address(std::string(view.peer_address));
  e.set_request_id(std::string(view.request_id));
  if (view.has_duration) {
    e.mutable_duration()->set_seconds(view.duration.seconds);
    e.mutable_duration()->set_nanos(view.duration.nanos);
  }
  for (const auto& [k, v] : view.attributes) {
    e.mutable_attributes()->insert({std::string(k), std::string(v)});
  }
  return e;
}

// A view of `event` (its strings, not copies); `*attributes` holds the attribute
// entries the view points to, in the map's order. `event` and `*attributes` must
// outlive the view. For tests and fuzzers that compare the two paths.
inline EventView ViewOf(const iotauth::audit::v1::AuditEvent& event,
                        std::vector<EventView::Attribute>* attributes) {
  EventView v;
  v.event_id = event.event_id();
  v.has_time = event.has_time();
  v.time = {event.time().seconds(), event.time().nanos()};
  v.type = event.type();
  v.tenant_id = event.tenant_id();
  v.product_key = event.product_key();
  v.device_id = event.device_id();
  v.outcome = event.outcome();
  v.reason = event.reason();
  v.credential_type = event.credential_type();
  v.credential_fingerprint = event.credential_fingerprint();
  v.caller = event.caller();
  v.peer_address = event.peer_address();
  v.request_id = event.request_id();
  v.has_duration = event.has_duration();
  v.duration = {event.duration().seconds(), event.duration().nanos()};
  attributes->clear();
  for (const auto& [k, value] : event.attributes()) attributes->emplace_back(k, value);
  v.attributes = *attributes;
  return v;
}

}  // namespace iotauth::audit
