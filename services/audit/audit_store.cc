#include "services/audit/audit_store.h"

#include <utility>
#include <vector>

#include "services/audit/canonical.h"
#include "services/common/status_macros.h"

namespace iotauth::audit {

absl::Status CheckEncodedEvent(const EncodedBatch& batch, const EncodedEvent& event,
                               CanonicalFields* fields) {
  if (event.offset > batch.buffer.size() || batch.buffer.size() - event.offset < event.size) {
    return absl::InvalidArgumentError("audit event encoding lies outside its batch");
  }
  const absl::string_view bytes = batch.buffer.substr(event.offset, event.size);
  if (!IsUnchainedEncoding(bytes) || !ParseCanonical(bytes, fields)) {
    return absl::InvalidArgumentError("audit event is not an unchained canonical encoding");
  }
  if (fields->event_id.empty()) return absl::InvalidArgumentError("audit event without event_id");
  if (fields->has_time && (fields->time_nanos < 0 || fields->time_nanos > 999999999)) {
    return absl::InvalidArgumentError("audit event time has out-of-range nanos");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<AppendedEvent>> AuditStore::AppendEncoded(const EncodedBatch& batch) {
  std::vector<iotauth::audit::v1::AuditEvent> events(batch.events.size());
  bool fresh = true;
  for (size_t i = 0; i < batch.events.size(); ++i) {
    CanonicalFields fields;
    absl::Status status = CheckEncodedEvent(batch, batch.events[i], &fields);
    if (!status.ok()) return status;
    if (!CanonicalFieldsToEvent(fields, &events[i])) {
      return absl::InvalidArgumentError("audit event attributes are malformed");
    }
    events[i].clear_sequence();  // placeholders; Append sets both
    events[i].clear_prev_hash();
    fresh = fresh && batch.events[i].fresh;
  }
  return fresh ? AppendFresh(&events) : Append(&events);
}

absl::StatusOr<uint64_t> AuditStore::ApplyRetention(const RetentionPolicy& policy, absl::Time now) {
  IOTAUTH_ASSIGN_OR_RETURN(std::optional<CheckpointRecord> cut, PlanRetention(policy, now));
  if (!cut) return 0;
  return PruneThrough(*cut, now);
}

}  // namespace iotauth::audit
