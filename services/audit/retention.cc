#include "services/audit/retention.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/audit/chain_check.h"
#include "services/audit/event_util.h"
#include "services/common/status_macros.h"

namespace iotauth::audit {

using iotauth::audit::v1::AuditEvent;

AuditEvent MakeRetentionEvent(const CheckpointRecord& cut, const RetentionPolicy& policy,
                              absl::Time now) {
  AuditEvent e;
  e.set_event_id(NewEventId());
  SetTimestamp(now, e.mutable_time());
  e.set_type(iotauth::audit::v1::EVENT_TYPE_RETENTION);
  e.set_outcome(iotauth::audit::v1::OUTCOME_SUCCESS);
  e.set_reason(absl::StrCat("retention prunes events through ", cut.sequence));
  auto& a = *e.mutable_attributes();
  a[kRetentionPrunedThrough] = absl::StrCat(cut.sequence);
  a[kRetentionPrunedThroughHash] = cut.head_hash;
  a[kRetentionFirstRetained] = absl::StrCat(cut.sequence + 1);
  if (policy.max_age > absl::ZeroDuration()) {
    a[kRetentionMaxAge] = absl::StrCat(absl::ToInt64Seconds(policy.max_age), "s");
  }
  if (policy.max_rows > 0) a[kRetentionMaxEvents] = absl::StrCat(policy.max_rows);
  if (policy.max_bytes > 0) a[kRetentionMaxBytes] = absl::StrCat(policy.max_bytes);
  return e;
}

bool NamesCut(const AuditEvent& event, uint64_t sequence, absl::string_view hash) {
  if (event.type() != iotauth::audit::v1::EVENT_TYPE_RETENTION) return false;
  const auto& a = event.attributes();
  auto through = a.find(kRetentionPrunedThrough);
  auto through_hash = a.find(kRetentionPrunedThroughHash);
  return through != a.end() && through_hash != a.end() &&
         through->second == absl::StrCat(sequence) && through_hash->second == hash;
}

absl::StatusOr<VerifyResult> CheckRetentionRecorded(AuditStore& store, VerifyResult r) {
  if (!r.ok || r.anchor_sequence == 0) return r;
  IOTAUTH_ASSIGN_OR_RETURN(uint64_t first, store.FirstSequence());
  if (r.anchor_sequence + 1 != first) return r;  // started at a later checkpoint
  IOTAUTH_ASSIGN_OR_RETURN(ChainHead head, store.Head());
  if (r.last_sequence < head.sequence) return r;  // stopped short of the head
  // The walk vouches for every event in (anchor, last] and for the anchor's hash.
  EventFilter f;
  f.type = iotauth::audit::v1::EVENT_TYPE_RETENTION;
  f.after_sequence = r.anchor_sequence;
  f.max_sequence = r.last_sequence;
  uint64_t newest_cut = 0;  // the latest cut a record names, below the anchor
  uint64_t newest_record = 0;
  for (;;) {
    IOTAUTH_ASSIGN_OR_RETURN(std::vector<AuditEvent> page, store.Query(f, 256));
    for (const AuditEvent& e : page) {
      if (NamesCut(e, r.anchor_sequence, r.anchor_hash)) return r;
      uint64_t cut = 0;
      auto it = e.attributes().find(kRetentionPrunedThrough);
      if (it != e.attributes().end() && absl::SimpleAtoi(it->second, &cut) &&
          cut < r.anchor_sequence) {
        newest_cut = cut;
        newest_record = e.sequence();
      }
    }
    if (page.size() < 256) break;
    f.after_sequence = page.back().sequence();
  }
  const uint64_t gone_from = newest_cut + 1;
  std::string detail = absl::StrCat(
      "events ", gone_from, "..", r.anchor_sequence,
      " are gone but no retention record names that cut: they were removed outside retention");
  if (newest_record != 0) {
    absl::StrAppend(&detail, " (the newest retention record, event ", newest_record,
                    ", pruned through ", newest_cut, ")");
  }
  absl::StrAppend(&detail,
                  ". Restore the removed part of the log from a backup; what is left cannot "
                  "vouch for it");
  return FailWith(std::move(r), {gone_from, kProblemMissing, std::move(detail)});
}

}  // namespace iotauth::audit
