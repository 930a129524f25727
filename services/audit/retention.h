// Retention, recorded in the chain. Before the local pipeline prunes the oldest
// events it commits an EVENT_TYPE_RETENTION event naming the cut (the last event to
// go and its hash). A full verify then checks that the retained log's start is a
// cut such a record names: events removed by hand, with an anchor forged to match
// (the hash of the first kept event's predecessor is in plain sight), fail it,
// where before they looked like retention.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/iotauth/audit/v1/audit.pb.h"
#include "services/audit/audit_store.h"

namespace iotauth::audit {

// Attribute keys of a retention record.
inline constexpr char kRetentionPrunedThrough[] = "pruned_through";
inline constexpr char kRetentionPrunedThroughHash[] = "pruned_through_hash";
inline constexpr char kRetentionFirstRetained[] = "first_retained";
inline constexpr char kRetentionMaxAge[] = "max_age";
inline constexpr char kRetentionMaxEvents[] = "max_events";
inline constexpr char kRetentionMaxBytes[] = "max_bytes";

// The record of `cut` (as PlanRetention returned it) under `policy`.
iotauth::audit::v1::AuditEvent MakeRetentionEvent(const CheckpointRecord& cut,
                                                  const RetentionPolicy& policy, absl::Time now);

// `event` is a retention record naming the cut at `sequence` with `hash`.
bool NamesCut(const iotauth::audit::v1::AuditEvent& event, uint64_t sequence,
              absl::string_view hash);

// Applied to a walk's result (AuditStore::Verify, VerifyAgainstCheckpoint) when the
// walk started at the retained start's anchor and reached the head: a retention
// record among the walked events must name that anchor and its hash. If none does,
// `r` fails MISSING at the first event no record accounts for. Other results pass
// through unchanged (a failed walk, a log that starts at genesis, or a walk that
// started at a later checkpoint or stopped short of the head, which says nothing
// about the log's start).
absl::StatusOr<VerifyResult> CheckRetentionRecorded(AuditStore& store, VerifyResult r);

}  // namespace iotauth::audit
